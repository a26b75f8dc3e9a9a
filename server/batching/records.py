"""What the batcher hands out: named arrays, each request's share of a run, and the record of a run that every
batch hook receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from opentelemetry.trace import SpanContext

Arrays = dict[str, npt.NDArray[np.generic]]
"""Named arrays: a request's inputs or a run's outputs, by input or output name."""


class BatchResult(NamedTuple):
    """One request's share of a run, and what it cost."""

    outputs: Arrays
    queue_seconds: float
    compute_seconds: float
    batch_size: int
    """Rows in the ONNX Runtime run this request was part of."""


@dataclass(frozen=True)
class BatchRecord:
    """What one ONNX Runtime run did; given to every batch hook."""

    model: str
    version: int
    rows: int
    request_ids: tuple[str, ...]
    queue_seconds: tuple[float, ...]
    compute_seconds: float
    inputs: Arrays
    outputs: Arrays
    failed: bool
    span_contexts: tuple[SpanContext | None, ...] = ()
    """The trace span of each request in the run (None where a request had none)."""
    started_ns: int = 0
    """Wall-clock start of the run, in nanoseconds."""
    ended_ns: int = 0
    """Wall-clock end of the run, in nanoseconds."""
    execution_provider: str = ""
    """The ONNX Runtime execution provider that ran it."""
    request_rows: tuple[int, ...] = ()
    """Rows of each request, in `request_ids` order (their rows lie in that order in inputs and outputs)."""


BatchHook = Callable[[BatchRecord], None]
"""Called on the event loop after each run; must be cheap (sample, count) and must not raise."""
