"""The writer between serving and the store: predictions are queued in memory and written in batches by one
thread with its own connection, so a call never waits for the database. When the store is slow or down the queue
holds what it can (a bound in predictions), writes are retried with backoff, and what must be dropped is counted
and reported; nothing is lost silently."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from vigil.server.store.base import Annotation, Store
from vigil.telemetry.quality.outcomes import LoggedPrediction

logger = logging.getLogger(__name__)

DROP_REPORT_SECONDS = 10.0
"""Dropped predictions are logged at most this often (each is counted at once)."""
ANNOTATION_WAIT_SECONDS = 60.0
"""How long a caller's id or subject waits for its prediction to be logged before it is given up."""


class PredictionLog:
    """Batched, retried writes of predictions (and the ids and subjects their callers gave) to a store.

    >>> log = PredictionLog(store, max_queued=100_000, batch_size=1000, on_dropped=counter.add)
    >>> log.start()
    >>> log.log([prediction])            # from the event loop: O(1) per prediction, never blocks
    >>> log.flush(timeout=5)             # wait until what was queued is written
    >>> log.close(timeout=10)
    """

    def __init__(self, store: Store, *, max_queued: int, batch_size: int,
                 on_dropped: Callable[[int], None] = lambda n: None,
                 backoff: tuple[float, float] = (0.05, 5.0)) -> None:
        self.store = store
        self._max_queued = max_queued
        self._batch_size = batch_size
        self._on_dropped = on_dropped
        self._backoff = backoff
        self._queue: deque[LoggedPrediction | Annotation] = deque()
        self._condition = threading.Condition()
        self._queued = 0
        """Items ever queued (predictions and client ids)."""
        self._settled = 0
        """Items written or dropped: flush waits for this to reach what was queued before it."""
        self._closing = False
        self._thread: threading.Thread | None = None
        self._waiting: dict[str, tuple[Annotation, float]] = {}
        """Request id → (its annotation, since when), for annotations that came before their prediction was
        written."""
        self.written = 0
        """Predictions written."""
        self.dropped = 0
        """Predictions dropped: the queue was full, or the store stayed down past shutdown."""
        self._unreported = 0
        self._reported_at = -DROP_REPORT_SECONDS
        self.failures = 0
        """Write attempts that failed (each retried)."""
        self.last_error: str | None = None
        self.healthy = True
        """False while writes fail."""
        self.dropped_annotations = 0
        """Callers' ids and subjects not kept because the queue was full (their predictions mostly were too)."""

    # -- from the event loop -------------------------------------------------------------------------------------

    def log(self, predictions: Sequence[LoggedPrediction]) -> None:
        with self._condition:
            room = self._max_queued - len(self._queue)
            taken = predictions if room >= len(predictions) else predictions[:max(room, 0)]
            self._queue.extend(taken)
            dropped = len(predictions) - len(taken)
            self._queued += len(taken)  # what is dropped never enters the queue, so a flush never waits for it
            self._condition.notify()
        if dropped:
            self._drop(dropped, "the store's write queue is full")

    def annotate(self, request_id: str, *, client_id: str | None = None, subject_hash: str | None = None) -> None:
        """Give `request_id`'s prediction the id its caller chose (so feedback can name it by that id; a caller's
        id never replaces a prediction, and one several predictions were sent with names none of them) or the
        keyed hash of its subject (so an erasure finds it)."""
        with self._condition:
            if len(self._queue) >= self._max_queued:
                self.dropped_annotations += 1  # its prediction is probably dropped too, and counted
                return
            self._queue.append((request_id, client_id, subject_hash))
            self._queued += 1
            self._condition.notify()

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vigil-store-writer", daemon=True)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far is written or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            target = self._queued
            while self._settled < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._condition.wait(left)
        return True

    def close(self, timeout: float) -> None:
        """Write what is queued (trying until `timeout`), then stop; what could not be written is counted."""
        self.flush(timeout)
        with self._condition:
            self._closing = True
            left = [item for item in self._queue if isinstance(item, LoggedPrediction)]
            self._settled += len(self._queue)
            self._queue.clear()
            self._condition.notify_all()
        if left:
            self._drop(len(left), f"the store could not be written before shutdown ({self.last_error})")
        if self._thread is not None:
            self._thread.join(timeout=max(self._backoff[1], 1.0) + 1)

    @property
    def queued(self) -> int:
        """Predictions and caller ids waiting to be written: queued, or in the batch being written."""
        return self._queued - self._settled

    # -- the writer thread ---------------------------------------------------------------------------------------

    def _drop(self, count: int, why: str) -> None:
        """Count dropped predictions; the log says so at most every `DROP_REPORT_SECONDS`, with the sum since."""
        self._on_dropped(count)
        with self._condition:
            self.dropped += count
            self._unreported += count
            now = time.monotonic()
            if now - self._reported_at < DROP_REPORT_SECONDS:
                return
            count, self._unreported, self._reported_at = self._unreported, 0, now
        logger.warning("%d prediction(s) not logged: %s", count, why, extra={"fields": {"dropped_total": self.dropped}})

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if self._closing:
                    return
                batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            predictions = [item for item in batch if isinstance(item, LoggedPrediction)]
            annotations = [item for item in batch if isinstance(item, tuple)]
            if not self._write(predictions, annotations):
                if predictions:
                    self._drop(len(predictions), f"the store could not be written before shutdown ({self.last_error})")
                return
            with self._condition:
                self._settled += len(batch)
                self._condition.notify_all()

    def _write(self, predictions: list[LoggedPrediction], annotations: list[Annotation]) -> bool:
        """Write one batch, retrying with backoff until it succeeds; False when closing gave up on it.

        A caller's id or subject usually reaches the writer before its prediction (the monitor folds predictions
        twice a second): it waits, and goes into the prediction's row as that is written; one that comes after
        its prediction was written updates the row. One still unmatched once the writer has caught up with the
        queue, `ANNOTATION_WAIT_SECONDS` after it came, is given up (its prediction was dropped, or not logged)."""
        now = time.monotonic()
        waiting = self._waiting
        for annotation in annotations:
            earlier = waiting.get(annotation[0])
            if earlier is not None:  # two annotations of one request: keep what each gave
                merged = earlier[0]
                annotation = (annotation[0], annotation[1] or merged[1], annotation[2] or merged[2])
            waiting[annotation[0]] = (annotation, now if earlier is None else earlier[1])
        rows = []
        for p in predictions:
            entry = waiting.pop(p.request_id, None)
            if entry is not None:
                _, client_id, subject = entry[0]
                p = replace(p, client_id=p.client_id or client_id, subject_hash=p.subject_hash or subject)
            rows.append(p)
        pending = [annotation for annotation, _ in waiting.values()]
        delay = self._backoff[0]
        while True:
            try:
                missing = self.store.write(rows, pending)
            except Exception as exc:
                self.failures += 1
                if self.healthy or self.failures % 100 == 0:
                    logger.error("writing %d prediction(s) to the store %s failed (retrying every %g s at most): "
                                 "%s", len(rows), self.store.name, self._backoff[1], exc)
                self.healthy, self.last_error = False, str(exc)
                with self._condition:
                    self._condition.wait_for(lambda: self._closing, timeout=delay)
                    if self._closing:
                        return False
                delay = min(delay * 2, self._backoff[1])
                continue
            if not self.healthy:
                logger.info("writing to the store %s works again", self.store.name)
            self.healthy, self.last_error = True, None
            self.written += len(rows)
            caught_up = not self._queue
            done = time.monotonic()
            for request_id in [r for r, (_, since) in waiting.items()
                               if r not in missing or (caught_up and done - since > ANNOTATION_WAIT_SECONDS)]:
                del waiting[request_id]
            return True
