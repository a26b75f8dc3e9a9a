"""The thread side of batching: each instance's worker thread runs whole batches on its session (one
concatenation per input, one run, a check of the batch dimension) and posts the outcome back to the event loop."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from opentelemetry.trace import SpanContext

from vigil.server.batching.records import Arrays, BatchResult

logger = logging.getLogger(__name__)


class Runner(Protocol):
    """What the batcher runs: a session's blocking `run`."""

    def run(self, inputs: Arrays, output_names: Sequence[str]) -> Arrays: ...


@dataclass(eq=False, slots=True)
class Work:
    """One request waiting in the queue, then in a run."""

    inputs: Arrays
    rows: int
    outputs: tuple[str, ...]
    key: Hashable
    future: asyncio.Future[BatchResult]
    enqueued: float
    deadline: float | None
    request_id: str
    span_context: SpanContext | None = None
    alone: bool = False
    """Set when a shared run failed: this request now runs as a batch of its own, never merged."""


@dataclass(frozen=True)
class RunOutcome:
    """What a worker thread hands back for a run that did not raise."""

    inputs: Arrays
    outputs: Arrays
    compute_seconds: float
    started_ns: int
    ended_ns: int


def shape_key(inputs: Arrays) -> Hashable:
    """Inputs may share a run only when every non-batch dimension and dtype is equal."""
    return tuple([(name, array.shape[1:], array.dtype.str) for name, array in inputs.items()])


def execute(runner: Runner, batch: list[Work], outputs: tuple[str, ...], batched: bool) -> RunOutcome:
    """Runs in a worker thread: one concatenation per input, one session run, a check of the batch dimension."""
    if len(batch) == 1:
        inputs = batch[0].inputs
    else:
        inputs = {name: np.concatenate([w.inputs[name] for w in batch]) for name in batch[0].inputs}
    started_ns = time.time_ns()
    started = time.perf_counter()
    results = runner.run(inputs, outputs)
    compute = time.perf_counter() - started
    ended_ns = time.time_ns()
    if batched:
        rows = sum(w.rows for w in batch)
        for name, array in results.items():
            if array.ndim == 0 or array.shape[0] != rows:
                raise ValueError(f"output '{name}' has shape {list(array.shape)}, not a batch dimension of {rows}")
    return RunOutcome(inputs=inputs, outputs=results, compute_seconds=compute, started_ns=started_ns,
                       ended_ns=ended_ns)


Job = tuple[list[Work], tuple[str, ...], asyncio.AbstractEventLoop, Callable[..., None]]


class Worker(threading.Thread):
    """One instance's thread: takes batches from its queue, runs them, posts the outcome to the event loop."""

    def __init__(self, runner: Runner, *, batched: bool, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._runner = runner
        self._batched = batched

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            batch, outputs, loop, done = job
            try:
                outcome: RunOutcome | None = execute(self._runner, batch, outputs, self._batched)
                error: BaseException | None = None
            except BaseException as exc:  # reported to every request of the batch, never lost
                outcome, error = None, exc
            try:
                loop.call_soon_threadsafe(done, outcome, error)
            except RuntimeError:  # the event loop closed while this batch ran: nobody waits for it
                logger.debug("event loop closed before batch results were delivered")


