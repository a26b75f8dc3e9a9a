"""Cumulative per-version serving statistics (what the Open Inference Protocol's ModelStatistics reports)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """A cumulative count and total duration."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass
class BatchStatistics:
    """What the batcher did: runs, rows, failures, queue time, and compute time per batch size."""

    executions: int = 0
    """ONNX Runtime runs."""
    inferences: int = 0
    """Rows inferred by successful runs."""
    failures: int = 0
    """Runs that raised."""
    by_batch_size: dict[int, int] = field(default_factory=dict)
    """Runs per batch size (rows)."""
    queue: Duration = field(default_factory=Duration)
    """Time requests waited for an instance."""
    compute: Duration = field(default_factory=Duration)
    """Time runs took, one count per run."""
    compute_by_batch_size: dict[int, Duration] = field(default_factory=dict)
    """Time runs took, per batch size."""

    def record_run(self, rows: int, seconds: float, queued: list[float], failed: bool) -> None:
        self.executions += 1
        self.by_batch_size[rows] = self.by_batch_size.get(rows, 0) + 1
        for wait in queued:
            self.queue.add(wait)
        if failed:
            self.failures += 1
            return
        self.inferences += rows
        self.compute.add(seconds)
        self.compute_by_batch_size.setdefault(rows, Duration()).add(seconds)


@dataclass
class RequestStatistics:
    """Requests for one model version that succeeded or failed, with their time in the server."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    last_inference_ms: int = 0
    """Unix time of the last successful request, in milliseconds."""

    def record(self, seconds: float, ok: bool) -> None:
        if ok:
            self.success.add(seconds)
            self.last_inference_ms = int(time.time() * 1000)
        else:
            self.fail.add(seconds)
