"""GPU metrics come from NVML when a GPU is present, and are absent (not zero) when none is."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.conftest import running_app
from vigil.telemetry.metrics.gpu import _devices

HAS_GPU = bool(_devices())


@pytest.mark.skipif(HAS_GPU, reason="checks the machine without a GPU")
async def test_no_gpu_no_gpu_metrics(model_repo: Path) -> None:
    async with running_app(model_repo) as app, aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.http_port}/metrics") as response:
            page = await response.text()
    assert not app.has_gpu_metrics and "vigil_gpu_" not in page


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU and driver (NVML); this machine has none")
async def test_gpu_metrics_on_a_gpu_machine(model_repo: Path) -> None:
    async with running_app(model_repo) as app, aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{app.http_port}/metrics") as response:
            page = await response.text()
    assert app.has_gpu_metrics
    for name in ("vigil_gpu_utilization_ratio", "vigil_gpu_memory_used_bytes", "vigil_gpu_memory_total_bytes",
                 "vigil_gpu_power_usage_watts"):
        assert f'{name}{{gpu="0"' in page
