"""Host staging buffers for the GPU path: page-locked (pinned) memory that the GPU reads and writes by DMA.

With IOBinding on the CUDA provider, inputs bound from ordinary numpy arrays are pageable memory: the driver first
copies them into a pinned bounce buffer of its own, then to the device. Copying each input once into a pinned
buffer that ONNX Runtime allocated, and binding that, lets the transfer go straight to the device; outputs bound to
pinned buffers come back the same way. Buffers are allocated once per name and shape and reused run after run
(allocating pinned memory is slow), a bounded number of shapes per name.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

logger = logging.getLogger(__name__)

MAX_SHAPES = 8
"""Buffers kept per tensor name; a batch size not among the last ones used gets a new buffer (the oldest goes)."""


def pinned_memory(device_id: int) -> Any | None:
    """ONNX Runtime's host-accessible (page-locked) memory for CUDA device `device_id`, or None where the CUDA
    provider offers none (no GPU, or an ONNX Runtime without it)."""
    try:
        cuda = [d for d in ort.get_ep_devices() if d.ep_name == "CUDAExecutionProvider"]
    except Exception:  # an ONNX Runtime without device discovery
        logger.debug("ONNX Runtime lists no execution provider devices", exc_info=True)
        return None
    if device_id >= len(cuda):
        return None
    return cuda[device_id].memory_info(ort.OrtDeviceMemoryType.HOST_ACCESSIBLE)


class HostStaging:
    """Reusable host buffers, one per (name, shape, dtype), in `memory_info`'s memory (None: ordinary CPU memory,
    which exercises the same path where there is no GPU). Used from one worker thread at a time.

    >>> staging = HostStaging(pinned_memory(0))
    >>> value = staging.stage("x", rows)            # a copy of `rows` in a pinned buffer, ready to bind
    """

    def __init__(self, memory_info: Any | None, *, max_shapes: int = MAX_SHAPES) -> None:
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be at least 1, got {max_shapes}")
        self.memory_info = memory_info
        self._max_shapes = max_shapes
        self._buffers: dict[str, OrderedDict[tuple[tuple[int, ...], str], ort.OrtValue]] = {}
        self.allocations = 0
        """Buffers allocated so far (each a slow, page-locking allocation on a GPU machine)."""

    @property
    def pinned(self) -> bool:
        return self.memory_info is not None

    def buffer(self, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> ort.OrtValue:
        """The buffer for `name` with this shape and dtype, allocated on first use."""
        key = (tuple(int(d) for d in shape), np.dtype(dtype).str)
        kept = self._buffers.setdefault(name, OrderedDict())
        value = kept.get(key)
        if value is not None:
            kept.move_to_end(key)
            return value
        if self.memory_info is not None:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(key[0]), np.dtype(dtype).type,
                                                              memory_info=self.memory_info)
        else:
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(key[0]), np.dtype(dtype).type, "cpu", 0)
        self.allocations += 1
        kept[key] = value
        while len(kept) > self._max_shapes:
            kept.popitem(last=False)
        return value

    def stage(self, name: str, array: npt.NDArray[Any]) -> ort.OrtValue:
        """A copy of `array` in its staging buffer."""
        array = np.ascontiguousarray(array)
        value = self.buffer(name, array.shape, array.dtype)
        value.update_inplace(array)
        return value
