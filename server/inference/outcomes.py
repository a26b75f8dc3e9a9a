"""The server's side of the prediction log: predictions go to it through the quality monitor's sink, feedback and
erasure are joined in it off the event loop, and the monitor's accuracy figures are refreshed from it on a
schedule (and soon after feedback). Retention is enforced here too."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from vigil.server.store.aggregates import FigureRequest
from vigil.server.store.base import Store
from vigil.server.store.log import PredictionLog
from vigil.server.store.records import Erased, FeedbackItem, Joined, StoreError
from vigil.telemetry.calls.shadow_hook import SHADOW_SUFFIX
from vigil.telemetry.quality.figures import QualityFigures, WindowFigures
from vigil.telemetry.quality.monitor import QualityMonitor
from vigil.telemetry.quality.outcomes import subject_hash

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
"""How long feedback waits for predictions still queued for the store before joining without them."""
MIN_REFRESH_SECONDS = 0.25
"""Refreshes woken by feedback run at most this often."""


class Outcomes:
    """Feedback, erasure and accuracy figures through the prediction log.

    >>> outcomes = Outcomes(store, prediction_log, monitor, subject_key=key, count_rows=1000,
    ...                     timed_seconds=3600, refresh_seconds=5, purge_seconds=3600)
    >>> await outcomes.start()
    >>> results = await outcomes.feedback([("3f2a...", ("benign",), "")])
    """

    def __init__(self, store: Store, log: PredictionLog, monitor: QualityMonitor, *, subject_key: bytes,
                 count_rows: int, timed_seconds: float, refresh_seconds: float, purge_seconds: float) -> None:
        if not subject_key:
            raise ValueError("subject_key must not be empty")
        self.store, self.log, self.monitor = store, log, monitor
        self._subject_key = subject_key
        self._count_rows, self._timed_seconds = count_rows, timed_seconds
        self._refresh_seconds, self._purge_seconds = refresh_seconds, purge_seconds
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._registered: set[tuple[str, str, tuple[str, ...]]] = set()
        self._unregistered: set[tuple[str, str, tuple[str, ...]]] = set()
        self._dirty: set[tuple[str, str]] = set()
        self._refresh_lock = asyncio.Lock()

    def hash_subject(self, subject_id: str) -> str:
        return subject_hash(self._subject_key, subject_id)

    # -- on the request path (the event loop) --------------------------------------------------------------------

    def remember(self, request_id: str, model: str, version: str, *, client_id: str = "",
                 subject_id: str = "") -> None:
        """Keep with a monitored version's prediction the id its caller chose (feedback may name it by that id)
        and the keyed hash of its subject (an erasure finds it)."""
        if (client_id or subject_id) and self.monitor.get(model, version) is not None:
            self.log.annotate(request_id, client_id=client_id or None,
                              subject_hash=self.hash_subject(subject_id) if subject_id else None)

    async def feedback(self, items: Sequence[tuple[str, Sequence[str], str]]) -> list[Joined | Exception]:
        """Join (request id, labels, subject id) items; per item what it was joined to, or the domain error."""
        self.monitor.process()  # predictions answered a moment ago may still be queued in the monitor
        checked = [FeedbackItem(request_id, tuple(labels), self.hash_subject(subject) if subject else None,
                                join_shadow_suffix=SHADOW_SUFFIX) for request_id, labels, subject in items]
        results = await asyncio.to_thread(self._join, checked)
        joined = [r for r in results if isinstance(r, Joined)]
        if logger.isEnabledFor(logging.DEBUG):  # per call: the audit log records each one
            for item, result in zip(checked, results, strict=True):
                if isinstance(result, Joined):
                    fields: dict[str, object] = {"request_id": result.request_id, "model": result.model,
                                                 "version": result.version, "rows": len(result.predicted),
                                                 "replaced": result.replaced, "correct": result.correct}
                    if item.subject_hash is not None:
                        fields["subject_hash"] = item.subject_hash
                    logger.debug("feedback received", extra={"fields": fields})
        for result in joined:
            for counted in (result, result.shadow):
                if counted is not None and not counted.replaced:
                    self.monitor.count_feedback(counted.model, counted.version, len(counted.predicted),
                                                counted.correct)
        await self.refreshed({(r.model, r.version) for r in joined} | {(r.shadow.model, r.shadow.version)
                                                                          for r in joined if r.shadow is not None})
        return results

    def _join(self, items: list[FeedbackItem]) -> list[Joined | Exception]:
        if self.log.healthy:  # while writes fail, waiting for them would only hold the call
            self.log.flush(FLUSH_SECONDS)
        return self.store.feedback(items)

    async def forget(self, subject_id: str) -> Erased:
        """Erase a subject's predictions and outcomes (those already queued for the store included)."""
        hashed = self.hash_subject(subject_id)

        def erase() -> Erased:
            if not self.log.flush(FLUSH_SECONDS):  # the subject's latest predictions may still be queued
                raise StoreError("predictions queued for the store were not written in time, so an erasure now "
                                 "could miss some; the store is slow or down")
            return self.store.forget(hashed, SHADOW_SUFFIX)

        self.monitor.process()
        erased = await asyncio.to_thread(erase)
        await self.refreshed({(q.model, q.version) for q in self.monitor.versions()})
        return erased

    # -- the schedule --------------------------------------------------------------------------------------------

    async def register(self, model: str, version: str, labels: Sequence[str]) -> None:
        """Record a monitored version's labels in the store, so any process can check feedback for it. While the
        store cannot take them, the refresh tries again."""
        key = (model, version, tuple(labels))
        if key not in self._registered:
            try:
                await asyncio.to_thread(self.store.register, model, version, labels)
            except Exception as exc:
                self._unregistered.add(key)
                logger.warning("the labels of %s version %s could not be recorded in the store (tried again on "
                               "each refresh): %s", model, version, exc)
            else:
                self._registered.add(key)
                self._unregistered.discard(key)
        self._wake.set()

    async def refreshed(self, keys: set[tuple[str, str]]) -> None:
        """Return once these versions' figures were recomputed by a refresh that began after this call: what a
        caller just wrote shows in the stream, /metrics and alerts as soon as its call returns. Callers waiting at
        once share one refresh."""
        if not keys:
            return
        self._dirty |= keys
        async with self._refresh_lock:
            if not keys & self._dirty:
                return  # a refresh that took them after this call's write has finished
            dirty, self._dirty = self._dirty, set()
            await self.refresh(dirty)

    async def refresh(self, keys: set[tuple[str, str]] | None = None) -> None:
        """Recompute the figures of the monitored versions (`keys`, or all) from the store. The versions are read
        here, on the event loop that changes them; the store is read in a worker thread."""
        requests = [FigureRequest(q.model, q.version, q.labels, self._count_rows, self._timed_seconds,
                                  self.store.retention_seconds, q.profile.calibration if q.profile else None)
                    for q in self.monitor.versions() if keys is None or (q.model, q.version) in keys]
        for request, figures in zip(requests, await asyncio.to_thread(self._figures, requests), strict=True):
            if figures is not None:
                self.monitor.set_figures(request.model, request.version, figures)

    def _figures(self, requests: list[FigureRequest]) -> list[QualityFigures | None]:
        out: list[QualityFigures | None] = []
        for request in requests:
            try:
                out.append(self.store.figures(request))
            except Exception as exc:
                logger.warning("accuracy figures of %s version %s could not be read from the store: %s",
                               request.model, request.version, exc)
                out.append(None)
        return out

    def period_figures(self, model: str, version: str, start: float, end: float) -> WindowFigures | None:
        """A monitored version's figures for the predictions made from `start` to `end` (blocking: call it from a
        worker thread); None for a version not monitored here."""
        quality = self.monitor.get(model, version)
        if quality is None:
            return None
        calibration = quality.profile.calibration if quality.profile is not None else None
        return self.store.period(FigureRequest(model, version, quality.labels, self._count_rows, self._timed_seconds,
                                               self.store.retention_seconds, calibration), start, end)

    async def start(self) -> None:
        self.log.start()

        async def refresh() -> None:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._refresh_seconds)
                except TimeoutError:
                    pass
                self._wake.clear()
                try:
                    for model, version, labels in list(self._unregistered):
                        await self.register(model, version, labels)
                    self.monitor.process()
                    await asyncio.to_thread(self.log.flush, FLUSH_SECONDS)
                    async with self._refresh_lock:
                        await self.refresh()
                except Exception:
                    logger.exception("refreshing the accuracy figures failed; tried again on the next refresh")
                await asyncio.sleep(MIN_REFRESH_SECONDS)

        async def purge() -> None:
            while True:
                try:
                    started = time.monotonic()
                    deleted = await asyncio.to_thread(self.store.purge)
                    if deleted:
                        logger.info("purged %d prediction(s) older than the retention period from the store (%.2f s)",
                                    deleted, time.monotonic() - started)
                except Exception as exc:
                    logger.warning("purging the store failed: %s", exc)
                await asyncio.sleep(self._purge_seconds)

        self._tasks = [asyncio.create_task(refresh(), name="store-refresh"),
                       asyncio.create_task(purge(), name="store-purge")]

    async def close(self, timeout: float = 10.0) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.monitor.process()
        await asyncio.to_thread(self.log.close, timeout)
