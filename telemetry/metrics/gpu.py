"""GPU utilisation, memory and power through NVML (nvidia-ml-py), registered only when a GPU is present."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from vigil.telemetry.metrics.instruments import (
    GPU_MEMORY_TOTAL,
    GPU_MEMORY_USED,
    GPU_POWER_USAGE,
    GPU_UTILIZATION,
    Instruments,
)

logger = logging.getLogger(__name__)


def nvml_gpu_count() -> int:
    """GPUs the NVIDIA driver reports through NVML (nvidia-ml-py), which stays initialised for later readings;
    raises when there is no library or driver."""
    import pynvml

    pynvml.nvmlInit()
    return int(pynvml.nvmlDeviceGetCount())


def _devices() -> list[tuple[dict[str, str], Any]] | None:
    try:
        count = nvml_gpu_count()
    except Exception:  # no driver, no GPU, or no library: no GPU metrics
        return None
    import pynvml

    devices = []
    for index in range(count):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        devices.append(({"gpu": str(index), "gpu_uuid": uuid.decode() if isinstance(uuid, bytes) else uuid}, handle))
    return devices


def register_gpu_gauges(instruments: Instruments) -> bool:
    """Register utilisation (ratio), memory used and total (bytes) and power (watts) per GPU; False when none."""
    devices = _devices()
    if not devices:
        return False
    import pynvml

    def utilization(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(pynvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0, labels) for labels, h in devices]

    def memory_used(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(pynvml.nvmlDeviceGetMemoryInfo(h).used, labels) for labels, h in devices]

    def memory_total(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(pynvml.nvmlDeviceGetMemoryInfo(h).total, labels) for labels, h in devices]

    def power(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0, labels) for labels, h in devices]

    instruments.observe(GPU_UTILIZATION, utilization)
    instruments.observe(GPU_MEMORY_USED, memory_used)
    instruments.observe(GPU_MEMORY_TOTAL, memory_total)
    instruments.observe(GPU_POWER_USAGE, power)
    logger.info("GPU metrics from NVML for %d device(s)", len(devices))
    return True


@dataclass(frozen=True)
class GpuReading:
    """One GPU's utilisation, memory and power, read through NVML."""

    index: int
    name: str
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float


def gpu_reader() -> Callable[[], list[GpuReading]] | None:
    """A function reading every GPU's state for the Telemetry stream; None when there is no GPU."""
    devices = _devices()
    if not devices:
        return None
    import pynvml

    names = []
    for _, handle in devices:
        name = pynvml.nvmlDeviceGetName(handle)
        names.append(name.decode() if isinstance(name, bytes) else str(name))

    def read() -> list[GpuReading]:
        states = []
        for index, ((_, handle), name) in enumerate(zip(devices, names, strict=True)):
            try:
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                states.append(GpuReading(index, name, pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
                                       int(memory.used), int(memory.total),
                                       pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0))
            except Exception:  # a device that stops answering is left out of this snapshot
                logger.debug("reading GPU %d failed", index, exc_info=True)
        return states

    return read
