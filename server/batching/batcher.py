"""Dynamic batching: concurrent requests for one model version share ONNX Runtime runs.

A batch is cut whenever an instance (a session and its worker thread) is free: everything waiting with the
same non-batch shapes goes at once, up to `max_batch_size` rows. While every instance is busy, requests
accumulate, so batches grow with load by themselves and a lone request at low load runs at once.

Models that compute faster than requests arrive (small tabular models) would otherwise run one row at a time,
paying a run and a thread hand-off per row, because the instance is always free when the next request comes: a
gRPC server takes its calls one at a time, several event-loop turns apart, however many callers wait. So a free
instance may hold a lone request briefly for company: only while holding has been bringing more requests (at low
concurrency it brings none and the request runs at once; every `_PROBE_EVERY`-th cut holds anyway, to notice when
load returns), until as many requests wait as recent holds gathered, the batch is full, or the oldest request has
waited `_HOLD_LIMIT`. A configured `max_queue_delay` replaces this with its fixed wait.
Inputs whose non-batch dimensions differ are never mixed in one run (no padding).

A failed run of several requests fails none of them yet: each goes back to the front of the queue to run alone,
so only a request whose own run fails gets InferenceFailed (one bad row must not cost its neighbours their answer).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
from opentelemetry import trace

from vigil.server.batching.records import Arrays, BatchHook, BatchRecord, BatchResult
from vigil.server.batching.statistics import BatchStatistics
from vigil.server.batching.workers import Runner, RunOutcome, Work, Worker, shape_key
from vigil.server.errors import DeadlineExpired, InferenceFailed, ModelNotReady, Overloaded

logger = logging.getLogger(__name__)

_HOLD_LIMIT = 1e-3
"""Longest a request is held for company (seconds)."""
_PROBE_EVERY = 32
"""While holding brings no company, one cut in this many holds anyway, to notice when load returns."""
_LEARN = 0.2
"""Weight of the latest hold in the running estimate of the company a hold brings."""


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
        execution_provider: str = "",
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
        self.execution_provider = execution_provider
        self.statistics = BatchStatistics()
        self._free = list(range(len(runners)))
        self._queue: deque[Work] = deque()
        self._workers = [
            Worker(runner, batched=max_batch_size > 0, name=f"ort-{model}-{version}-{i}")
            for i, runner in enumerate(runners)
        ]
        for worker in self._workers:
            worker.start()
        self._timer: asyncio.TimerHandle | None = None
        self._hooks: list[BatchHook] = []
        self._running = 0
        self._dispatch_scheduled = False
        self._closed = False
        self._hold: asyncio.TimerHandle | None = None
        self._held_from = 0
        """Requests queued when the current hold began."""
        self._company = 0.0
        """Running estimate of the requests a hold brings in."""
        self._gathered = 1.0
        """Requests recent holds gathered (a slowly decaying peak): a hold ends once this many wait."""
        self._cuts = 0
        self._holds = 0
        self._wanted = 1.0
        """Requests the current hold waits for."""

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
        """Call `hook(record)` after every run; adding the same hook again changes nothing."""
        if hook not in self._hooks:
            self._hooks.append(hook)

    async def submit(
        self, inputs: Arrays, outputs: tuple[str, ...], *, rows: int, request_id: str, deadline: float | None = None
    ) -> BatchResult:
        """Queue a request and wait for its share of a run. `deadline` is a `time.monotonic()` instant.

        Raises Overloaded when the queue is full, DeadlineExpired when the deadline passes before the run,
        InferenceFailed when its own run fails (a failed shared run is retried one request at a time).
        """
        limit = self.max_batch_size if self.is_batching else rows
        if rows <= limit:  # the usual request: one Work, its own future awaited without a gather around it
            [work] = self._enqueue([inputs], [rows], outputs, [request_id], deadline)
            try:
                return await work.future
            except BaseException:
                self._withdraw([work])
                raise
        starts = range(0, rows, limit)
        chunks = [{name: a[s : s + limit] for name, a in inputs.items()} for s in starts]
        sizes = [min(limit, rows - s) for s in starts]
        return await self._submit_chunks(chunks, sizes, outputs, request_id, deadline)

    async def submit_many(
        self, items: Sequence[tuple[Arrays, int, str]], outputs: tuple[str, ...], *, deadline: float | None = None
    ) -> list[BatchResult | BaseException]:
        """Queue many (inputs, rows, request_id) items at once; each gets its result or its own exception."""
        limit = self.max_batch_size if self.is_batching else None
        small = [i for i, (_, rows, _) in enumerate(items) if limit is None or rows <= limit]
        large = [i for i in range(len(items)) if limit is not None and items[i][1] > limit]
        results: list[BatchResult | BaseException] = [Overloaded("not run")] * len(items)
        if small:
            try:
                work = self._enqueue([items[i][0] for i in small], [items[i][1] for i in small], outputs,
                                     [items[i][2] for i in small], deadline)
            except Overloaded as exc:
                for i in small:
                    results[i] = exc
            else:
                done = await self._wait(work, return_exceptions=True)
                for i, outcome in zip(small, done, strict=True):
                    results[i] = outcome
        if large:
            split = await asyncio.gather(
                *(self.submit(items[i][0], outputs, rows=items[i][1], request_id=items[i][2], deadline=deadline)
                  for i in large),
                return_exceptions=True,
            )
            for i, outcome in zip(large, split, strict=True):
                results[i] = outcome
        return results

    async def _submit_chunks(
        self, chunks: list[Arrays], sizes: list[int], outputs: tuple[str, ...], request_id: str,
        deadline: float | None,
    ) -> BatchResult:
        work = self._enqueue(chunks, sizes, outputs, [request_id] * len(chunks), deadline)
        results = await self._wait(work, return_exceptions=False)
        if len(results) == 1:
            return results[0]  # type: ignore[return-value]
        parts: list[BatchResult] = results  # type: ignore[assignment]
        return BatchResult(
            outputs={name: np.concatenate([r.outputs[name] for r in parts]) for name in outputs},
            queue_seconds=max(r.queue_seconds for r in parts),
            compute_seconds=sum(r.compute_seconds for r in parts),
            batch_size=max(r.batch_size for r in parts),
        )

    def _enqueue(
        self, chunks: list[Arrays], sizes: list[int], outputs: tuple[str, ...], request_ids: list[str],
        deadline: float | None,
    ) -> list[Work]:
        if len(self._queue) + len(chunks) > self.max_queue_size:
            raise Overloaded(
                f"model '{self.model}' version {self.version} has {len(self._queue)} requests queued; "
                f"the limit is max_queue_size={self.max_queue_size}"
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        span = trace.get_current_span().get_span_context()  # a sampled call's (only those are current)
        span_context = span if span.is_valid else None
        work = [
            Work(inputs=c, rows=n, outputs=outputs, key=shape_key(c) if self.is_batching else object(),
                  future=loop.create_future(), enqueued=now, deadline=deadline, request_id=rid,
                  span_context=span_context)
            for c, n, rid in zip(chunks, sizes, request_ids, strict=True)
        ]
        self._queue.extend(work)
        if self._hold is None:
            self._schedule_dispatch(loop)
        elif self._enough(len(self._queue)):  # the company a hold waited for has come
            self._dispatch()
        return work

    async def _wait(self, work: list[Work], *, return_exceptions: bool) -> list[BatchResult | BaseException]:
        try:
            return await asyncio.gather(*(w.future for w in work), return_exceptions=return_exceptions)
        except BaseException:
            self._withdraw(work)
            raise

    def _withdraw(self, work: list[Work]) -> None:
        """Cancelled or failed: whatever has not started leaves the queue (and its futures are dropped)."""
        for w in work:
            if not w.future.done():
                w.future.cancel()
            try:
                self._queue.remove(w)
            except ValueError:
                pass

    def _schedule_dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            loop.call_soon(self._settle)

    def _settle(self) -> None:
        """Cut now, or hold a lone request for company while holding has been bringing it (see the module): the
        hold ends when a request brings enough company (`_enqueue`), an instance comes free, or at its limit."""
        if not (self.is_batching and self.max_queue_delay <= 0 and self._free and self._queue):
            self._dispatch()
            return
        self._cuts += 1
        if self._company < 0.5 and self._cuts % _PROBE_EVERY:
            self._dispatch()
            return
        queued = len(self._queue)
        self._held_from = queued
        self._holds += 1  # one hold in `_PROBE_EVERY` waits for one more than recent holds gathered, so the
        self._wanted = self._gathered + (self._holds % _PROBE_EVERY == 0)  # estimate can grow when load does
        waited = time.monotonic() - self._queue[0].enqueued
        if self._enough(queued) or waited >= _HOLD_LIMIT:
            self._end_hold(queued)
            self._dispatch()
            return
        loop = asyncio.get_running_loop()
        self._hold = loop.call_at(loop.time() + (_HOLD_LIMIT - waited), self._dispatch)

    def _enough(self, queued: int) -> bool:
        """Whether a hold has the company it waits for: a full batch, or as many as recent holds gathered (one
        more, now and then)."""
        return queued >= self.max_batch_size or (queued >= self._wanted and self._company >= 0.5)

    def _end_hold(self, queued: int) -> None:
        """Learn from the hold that ends now: the company it brought, and how many waited at its end."""
        self._hold = None
        self._company += _LEARN * (min(queued - self._held_from, 4) - self._company)
        self._gathered = max(float(queued), self._gathered * 0.98, 1.0)

    def _dispatch(self) -> None:
        """Cut and start batches while an instance is free. Runs on the event loop only."""
        if self._hold is not None:  # an instance came free, or the queue filled, during a hold
            self._hold.cancel()
            self._end_hold(len(self._queue))
        self._dispatch_scheduled = False
        while self._free and self._queue:
            if not self._is_due():
                return
            batch = self._cut()
            if not batch:
                continue
            instance = self._free.pop()
            outputs = tuple(dict.fromkeys(itertools.chain.from_iterable(w.outputs for w in batch)))
            self._running += 1
            done = functools.partial(self._finish, instance, batch, time.monotonic())
            self._workers[instance].jobs.put((batch, outputs, asyncio.get_running_loop(), done))

    def _is_due(self) -> bool:
        """Always without a queue delay or for a retry; with one, when a batch is full or preferred, or the oldest
        waited enough."""
        if self.max_queue_delay <= 0 or not self.is_batching or self._queue[0].alone:
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

    def _cut(self) -> list[Work]:
        """Take the oldest live request and every later one of the same shapes that fits, looking no further once
        the batch is full; drop expired and cancelled ones on the way."""
        now = time.monotonic()
        batch: list[Work] = []
        skipped: list[Work] = []
        rows = 0
        limit = self.max_batch_size if self.is_batching else 0
        queue = self._queue
        while queue and (not batch or rows < limit):
            work = queue.popleft()
            if work.future.done():  # cancelled by its caller
                continue
            if work.deadline is not None and now >= work.deadline:
                work.future.set_exception(DeadlineExpired(
                    f"the deadline passed after {now - work.enqueued:.3f}s in the queue of model '{self.model}'"
                ))
                continue
            if not batch or (not work.alone and not batch[0].alone and work.key == batch[0].key
                             and rows + work.rows <= limit):
                batch.append(work)
                rows += work.rows
            else:
                skipped.append(work)
        queue.extendleft(reversed(skipped))
        if self.preferred_batch_sizes and len(batch) > 1 and rows not in self.preferred_batch_sizes:
            batch, rest = _trim_to_preferred(batch, self.preferred_batch_sizes)
            queue.extendleft(reversed(rest))
        return batch

    def _finish(
        self, instance: int, batch: list[Work], dispatched: float, outcome: RunOutcome | None,
        error: BaseException | None,
    ) -> None:
        self._free.append(instance)
        self._running -= 1
        rows = sum(w.rows for w in batch)
        self.statistics.record_run(
            rows, outcome.compute_seconds if outcome else 0.0, [dispatched - w.enqueued for w in batch],
            failed=outcome is None,
        )
        if outcome is None:
            logger.error(
                "inference failed on model %s version %d for requests %s",
                self.model, self.version, ", ".join(w.request_id for w in batch), exc_info=error,
            )
            waiting = [w for w in batch if not w.future.done()]
            if len(batch) > 1 and not self._closed:
                # Retried alone, at the front: they keep their enqueue time, deadline and future.
                for w in waiting:
                    w.alone = True
                self._queue.extendleft(reversed(waiting))
            else:
                for w in waiting:
                    w.future.set_exception(InferenceFailed(w.request_id))
            self._run_hooks(batch, rows, dispatched, None)
        else:
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

    def _run_hooks(self, batch: list[Work], rows: int, dispatched: float, outcome: RunOutcome | None) -> None:
        if not self._hooks:
            return
        record = BatchRecord(
            model=self.model, version=self.version, rows=rows,
            request_ids=tuple(w.request_id for w in batch),
            queue_seconds=tuple(dispatched - w.enqueued for w in batch),
            compute_seconds=outcome.compute_seconds if outcome else 0.0,
            inputs=outcome.inputs if outcome else {}, outputs=outcome.outputs if outcome else {},
            failed=outcome is None, span_contexts=tuple(w.span_context for w in batch),
            started_ns=outcome.started_ns if outcome else time.time_ns(),
            ended_ns=outcome.ended_ns if outcome else time.time_ns(),
            execution_provider=self.execution_provider, request_rows=tuple(w.rows for w in batch),
        )
        for hook in self._hooks:
            try:
                hook(record)
            except Exception:
                logger.exception("batch hook failed")

    def close(self) -> None:
        """Fail whatever still waits and release the worker threads (after in-flight runs finish). On the event
        loop thread when one runs (futures and timers belong to it); `join` then waits for the threads."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        for work in self._queue:
            if not work.future.done():
                work.future.set_exception(ModelNotReady(f"model '{self.model}' version {self.version} was unloaded"))
        self._queue.clear()
        for worker in self._workers:
            worker.jobs.put(None)

    def join(self) -> None:
        """Wait for the worker threads to end (after `close`). Blocks: run it off the event loop."""
        for worker in self._workers:
            worker.join()


def _trim_to_preferred(batch: list[Work], preferred: list[int]) -> tuple[list[Work], list[Work]]:
    """The longest prefix whose rows make a preferred size, and the rest; the whole batch when none does."""
    totals = list(itertools.accumulate(w.rows for w in batch))
    for size in preferred:  # largest first
        if size in totals:
            cut = totals.index(size) + 1
            return batch[:cut], batch[cut:]
    return batch, []
