"""Dynamic batching: concurrent requests for one model version share ONNX Runtime runs.

A batch is cut whenever an instance (a session and its worker thread) is free: everything waiting with the
same non-batch shapes goes at once, up to `max_batch_size` rows. While every instance is busy, requests
accumulate, so batches grow with load by themselves and a lone request at low load runs at once.

Cutting happens in a callback scheduled with `call_soon`, not inside `submit`: requests whose handlers the
event loop has already made ready in the same turn join the batch, which matters for models that compute
faster than the loop can bring in the next request. A lone request waits one loop turn, not a timer.
Inputs whose non-batch dimensions differ are never mixed in one run (no padding).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from server.errors import DeadlineExpired, InferenceFailed, ModelNotReady, Overloaded
from server.sessions import Arrays

logger = logging.getLogger(__name__)


class Runner(Protocol):
    """What the batcher runs: a session's blocking `run`."""

    def run(self, inputs: Arrays, output_names: Sequence[str]) -> Arrays: ...


@dataclass(frozen=True)
class BatchResult:
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


BatchHook = Callable[[BatchRecord], None]
"""Called on the event loop after each run; must be cheap (sample, count) and must not raise."""


@dataclass
class BatchStatistics:
    """Cumulative counts since the batcher started."""

    executions: int = 0
    """ONNX Runtime runs."""
    inferences: int = 0
    """Rows inferred."""
    failures: int = 0
    """Runs that raised."""
    by_batch_size: dict[int, int] = field(default_factory=dict)
    """Runs per batch size (rows)."""


@dataclass(eq=False)
class _Work:
    inputs: Arrays
    rows: int
    outputs: tuple[str, ...]
    key: Hashable
    future: asyncio.Future[BatchResult]
    enqueued: float
    deadline: float | None
    request_id: str


@dataclass(frozen=True)
class _RunOutcome:
    inputs: Arrays
    outputs: Arrays
    compute_seconds: float


def _shape_key(inputs: Arrays) -> Hashable:
    """Inputs may share a run only when every non-batch dimension and dtype is equal."""
    return tuple((name, array.shape[1:], array.dtype.str) for name, array in inputs.items())


def _execute(runner: Runner, batch: list[_Work], outputs: tuple[str, ...], batched: bool) -> _RunOutcome:
    """Runs in a worker thread: one concatenation per input, one session run, a check of the batch dimension."""
    if len(batch) == 1:
        inputs = batch[0].inputs
    else:
        inputs = {name: np.concatenate([w.inputs[name] for w in batch]) for name in batch[0].inputs}
    started = time.perf_counter()
    results = runner.run(inputs, outputs)
    compute = time.perf_counter() - started
    if batched:
        rows = sum(w.rows for w in batch)
        for name, array in results.items():
            if array.ndim == 0 or array.shape[0] != rows:
                raise ValueError(f"output '{name}' has shape {list(array.shape)}, not a batch dimension of {rows}")
    return _RunOutcome(inputs=inputs, outputs=results, compute_seconds=compute)


class DynamicBatcher:
    """Queues requests for one model version and runs them in batches on its instances.

    >>> batcher = DynamicBatcher([session], model="m", version=1, max_batch_size=64)
    >>> result = await batcher.submit({"x": rows}, ("y",), rows=len(rows), request_id="r1")
    >>> result.outputs["y"], result.batch_size
    """

    def __init__(
        self,
        runners: Sequence[Runner],
        *,
        model: str,
        version: int,
        max_batch_size: int,
        max_queue_size: int = 1024,
        max_queue_delay: float = 0.0,
        preferred_batch_sizes: Sequence[int] = (),
    ) -> None:
        if not runners:
            raise ValueError("a batcher needs at least one runner")
        if max_batch_size < 0 or max_queue_size < 1 or max_queue_delay < 0:
            raise ValueError("max_batch_size must be >= 0, max_queue_size >= 1 and max_queue_delay >= 0")
        if any(p < 1 or p > max(max_batch_size, 1) for p in preferred_batch_sizes):
            raise ValueError(f"preferred_batch_sizes must lie in 1..max_batch_size ({max_batch_size})")
        self.model = model
        self.version = version
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_queue_delay = max_queue_delay
        self.preferred_batch_sizes = sorted(set(preferred_batch_sizes), reverse=True)
        self.statistics = BatchStatistics()
        self._runners = list(runners)
        self._free = list(range(len(runners)))
        self._queue: deque[_Work] = deque()
        self._executor = ThreadPoolExecutor(len(runners), thread_name_prefix=f"ort-{model}-{version}")
        self._timer: asyncio.TimerHandle | None = None
        self._hooks: list[BatchHook] = []
        self._running = 0
        self._dispatch_scheduled = False

    @property
    def is_batching(self) -> bool:
        """False for models without a batch dimension: every request is a run of its own."""
        return self.max_batch_size > 0

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an instance."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Runs executing now."""
        return self._running

    def add_hook(self, hook: BatchHook) -> None:
        self._hooks.append(hook)

    async def submit(
        self, inputs: Arrays, outputs: tuple[str, ...], *, rows: int, request_id: str, deadline: float | None = None
    ) -> BatchResult:
        """Queue a request and wait for its share of a run. `deadline` is a `time.monotonic()` instant.

        Raises Overloaded when the queue is full, DeadlineExpired when the deadline passes before the run,
        InferenceFailed when the run fails.
        """
        limit = self.max_batch_size if self.is_batching else rows
        if rows <= limit:
            return await self._submit_chunks([inputs], [rows], outputs, request_id, deadline)
        starts = range(0, rows, limit)
        chunks = [{name: a[s : s + limit] for name, a in inputs.items()} for s in starts]
        sizes = [min(limit, rows - s) for s in starts]
        return await self._submit_chunks(chunks, sizes, outputs, request_id, deadline)

    async def _submit_chunks(
        self, chunks: list[Arrays], sizes: list[int], outputs: tuple[str, ...], request_id: str,
        deadline: float | None,
    ) -> BatchResult:
        if len(self._queue) + len(chunks) > self.max_queue_size:
            raise Overloaded(
                f"model '{self.model}' version {self.version} has {len(self._queue)} requests queued; "
                f"the limit is max_queue_size={self.max_queue_size}"
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        work = [
            _Work(inputs=c, rows=n, outputs=outputs, key=_shape_key(c) if self.is_batching else object(),
                  future=loop.create_future(), enqueued=now, deadline=deadline, request_id=request_id)
            for c, n in zip(chunks, sizes, strict=True)
        ]
        self._queue.extend(work)
        self._schedule_dispatch(loop)
        try:
            results = [await w.future for w in work]
        except BaseException:
            # Cancelled or failed: whatever has not started leaves the queue (and its futures are dropped).
            for w in work:
                if not w.future.done():
                    w.future.cancel()
                try:
                    self._queue.remove(w)
                except ValueError:
                    pass
            raise
        if len(results) == 1:
            return results[0]
        return BatchResult(
            outputs={name: np.concatenate([r.outputs[name] for r in results]) for name in outputs},
            queue_seconds=max(r.queue_seconds for r in results),
            compute_seconds=sum(r.compute_seconds for r in results),
            batch_size=max(r.batch_size for r in results),
        )

    def _schedule_dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        """Cut and start batches while an instance is free. Runs on the event loop only."""
        self._dispatch_scheduled = False
        while self._free and self._queue:
            if not self._is_due():
                return
            batch = self._cut()
            if not batch:
                continue
            instance = self._free.pop()
            outputs = tuple(dict.fromkeys(itertools.chain.from_iterable(w.outputs for w in batch)))
            loop = asyncio.get_running_loop()
            dispatched = time.monotonic()
            self._running += 1
            future = loop.run_in_executor(
                self._executor, _execute, self._runners[instance], batch, outputs, self.is_batching
            )
            future.add_done_callback(functools.partial(self._finish, instance, batch, dispatched))

    def _is_due(self) -> bool:
        """Always without a queue delay; with one, when a batch is full or preferred, or the oldest waited enough."""
        if self.max_queue_delay <= 0 or not self.is_batching:
            return True
        waiting = sum(w.rows for w in self._queue)
        if waiting >= self.max_batch_size or waiting in self.preferred_batch_sizes:
            return True
        due = self._queue[0].enqueued + self.max_queue_delay
        if time.monotonic() >= due:
            return True
        if self._timer is None or self._timer.cancelled():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + (due - time.monotonic()), self._on_timer)
        return False

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _cut(self) -> list[_Work]:
        """Take the oldest live request and every later one of the same shapes that fits; drop expired ones."""
        now = time.monotonic()
        batch: list[_Work] = []
        keep: deque[_Work] = deque()
        rows = 0
        for work in self._queue:
            if work.future.done():  # cancelled by its caller
                continue
            if work.deadline is not None and now >= work.deadline:
                work.future.set_exception(DeadlineExpired(
                    f"the deadline passed after {now - work.enqueued:.3f}s in the queue of model '{self.model}'"
                ))
                continue
            fits = not batch or (
                self.is_batching and work.key == batch[0].key and rows + work.rows <= self.max_batch_size
            )
            if fits:
                batch.append(work)
                rows += work.rows
            else:
                keep.append(work)
        if self.preferred_batch_sizes and len(batch) > 1 and rows not in self.preferred_batch_sizes:
            batch, rest = _trim_to_preferred(batch, self.preferred_batch_sizes)
            keep.extendleft(reversed(rest))
        self._queue = keep
        return batch

    def _finish(
        self, instance: int, batch: list[_Work], dispatched: float, future: asyncio.Future[_RunOutcome]
    ) -> None:
        self._free.append(instance)
        self._running -= 1
        rows = sum(w.rows for w in batch)
        stats = self.statistics
        stats.executions += 1
        stats.by_batch_size[rows] = stats.by_batch_size.get(rows, 0) + 1
        try:
            outcome = future.result()
        except Exception:
            stats.failures += 1
            logger.exception(
                "inference failed on model %s version %d for requests %s",
                self.model, self.version, ", ".join(w.request_id for w in batch),
            )
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(InferenceFailed(w.request_id))
            self._run_hooks(batch, rows, dispatched, None)
        else:
            stats.inferences += rows
            offset = 0
            for w in batch:
                if not w.future.done():
                    w.future.set_result(BatchResult(
                        outputs={n: outcome.outputs[n][offset : offset + w.rows] for n in w.outputs}
                        if self.is_batching else {n: outcome.outputs[n] for n in w.outputs},
                        queue_seconds=dispatched - w.enqueued,
                        compute_seconds=outcome.compute_seconds,
                        batch_size=rows,
                    ))
                offset += w.rows
            self._run_hooks(batch, rows, dispatched, outcome)
        self._dispatch()

    def _run_hooks(self, batch: list[_Work], rows: int, dispatched: float, outcome: _RunOutcome | None) -> None:
        if not self._hooks:
            return
        record = BatchRecord(
            model=self.model, version=self.version, rows=rows,
            request_ids=tuple(w.request_id for w in batch),
            queue_seconds=tuple(dispatched - w.enqueued for w in batch),
            compute_seconds=outcome.compute_seconds if outcome else 0.0,
            inputs=outcome.inputs if outcome else {}, outputs=outcome.outputs if outcome else {},
            failed=outcome is None,
        )
        for hook in self._hooks:
            try:
                hook(record)
            except Exception:
                logger.exception("batch hook failed")

    def close(self) -> None:
        """Fail whatever still waits and release the worker threads (after in-flight runs finish)."""
        if self._timer is not None:
            self._timer.cancel()
        for work in self._queue:
            if not work.future.done():
                work.future.set_exception(ModelNotReady(f"model '{self.model}' version {self.version} was unloaded"))
        self._queue.clear()
        self._executor.shutdown(wait=True)


def _trim_to_preferred(batch: list[_Work], preferred: list[int]) -> tuple[list[_Work], list[_Work]]:
    """The longest prefix whose rows make a preferred size, and the rest; the whole batch when none does."""
    totals = list(itertools.accumulate(w.rows for w in batch))
    for size in preferred:  # largest first
        if size in totals:
            cut = totals.index(size) + 1
            return batch[:cut], batch[cut:]
    return batch, []
