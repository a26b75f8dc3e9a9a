"""The report history's schedule: a tick every few seconds and at each minute's end; with a store, this member's
minutes written at each tick (closed ones once, the open one as it grows), the fleet's minutes read for a report,
and those past the retention purged now and then. Every store access runs in a thread of its own within a time
limit: a slow store never holds the server up, and a failed write is tried again at the next tick."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable

from vigil.telemetry.export.daemon_threads import in_daemon_thread
from vigil.telemetry.history.member_minutes import encode
from vigil.telemetry.history.minute_store import HistoryUnavailable, MinuteStore, read_window
from vigil.telemetry.history.minutes import MINUTE_SECONDS, minute_of
from vigil.telemetry.history.report_history import ReportHistory
from vigil.telemetry.history.window import Window, merge_members

logger = logging.getLogger(__name__)

MAX_MINUTES_PER_WRITE = 1440
"""Closed minutes written in one transaction: after an outage of the store, a day's backlog a tick."""


class HistoryRecorder:
    """Keeps a `ReportHistory` filled and, with a store, this member's minutes written to it.

    >>> recorder = HistoryRecorder(history, store=shared_state, member="host-1234-ab12")
    >>> await recorder.start()                  # records this start, ticks and writes every 10 s
    >>> window = await recorder.window(start, end)   # every member's minutes
    >>> await recorder.close(timeout=5)         # the last counts written
    """

    def __init__(self, history: ReportHistory, *, store: MinuteStore | None = None, member: str = "",
                 tick_seconds: float = 10.0, purge_interval_seconds: float = 3600.0,
                 read_timeout_seconds: float = 30.0) -> None:
        if not tick_seconds > 0 or not purge_interval_seconds > 0 or not read_timeout_seconds > 0:
            raise ValueError("tick_seconds, purge_interval_seconds and read_timeout_seconds must be positive")
        if store is not None and not member:
            raise ValueError("a member writing to a store needs a name")
        self.history = history
        self.store = store
        self.member = member
        self._tick = tick_seconds
        self._purge_interval = purge_interval_seconds
        self._read_timeout = read_timeout_seconds
        self._task: asyncio.Task[None] | None = None
        self._idle = threading.Event()  # no write or purge running: one at a time, in order
        self._idle.set()
        self._failing = False

    async def start(self) -> None:
        self.history.begin()
        self._task = asyncio.create_task(self._run(), name="report-history")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_purge = loop.time()
        while True:
            now = self.history.now()
            to_boundary = (math.floor(now / MINUTE_SECONDS) + 1) * MINUTE_SECONDS - now
            await asyncio.sleep(min(self._tick, to_boundary + 0.01))
            try:
                self.history.tick()
            except Exception:
                logger.exception("updating the report history failed")
            if self.store is None:
                continue
            await self.write(timeout=self._tick)
            if loop.time() >= next_purge:
                next_purge = loop.time() + self._purge_interval
                await self.purge(timeout=self._tick)

    async def write(self, *, timeout: float) -> bool:
        """Write this member's minutes not in the store yet (and the open one so far) within `timeout` seconds;
        True when written. A write still running from an earlier call (a stuck store) is not joined by another."""
        store = self.store
        if store is None or not self._idle.is_set():
            return False
        minutes, through = self.history.pending(limit=MAX_MINUTES_PER_WRITE)  # on the loop: it changes only here
        if not minutes:
            return True
        member, histograms = self.member, self.history.histograms

        def write() -> None:
            store.add_minutes([(member, m, encode(minute, histograms)) for m, minute in sorted(minutes.items())])

        done = await self._in_turn(write, timeout, "writing the report minutes to the store")
        if done and through is not None:
            self.history.release(through)
        return done

    async def purge(self, *, timeout: float) -> bool:
        """Delete every member's minutes past the retention period from the store; True when done in time."""
        store = self.store
        if store is None or not self._idle.is_set():
            return False
        before = minute_of(self.history.now() - self.history.retention_seconds)
        return await self._in_turn(lambda: store.purge_minutes(before), timeout,
                                   "purging old report minutes from the store")

    async def window(self, start: float, end: float, *, member: str | None = None) -> Window:
        """The history over [start, end]: with a store, every member's, or only `member`'s (HistoryUnavailable when
        the store cannot be read in time); else this process's own."""
        store = self.store
        history = self.history
        own = history.own_minutes(minute_of(start), minute_of(end), now=end)  # on the loop, like every change
        if store is None:  # merging a week of minutes takes a while: in a thread too
            return await asyncio.to_thread(
                merge_members, start, end, ((self.member, m, minute) for m, minute in own.items()),
                seen_before=history.started, duration_bounds=history.duration_bounds,
                confidence_bounds=history.confidence_bounds)
        result: list[Window] = []

        def read() -> None:
            result.append(read_window(store, self.member, own, start, end, histograms=history.histograms,
                                      duration_bounds=history.duration_bounds,
                                      confidence_bounds=history.confidence_bounds, only=member))

        if not await in_daemon_thread(read, self._read_timeout, name="vigil-report-history"):
            raise HistoryUnavailable(f"the store did not answer within {self._read_timeout:g}s")
        return result[0]

    async def close(self, *, timeout: float) -> bool:
        """Stop ticking, flush, and write the last minutes within `timeout` seconds (True when written)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.history.flush()
        if self.store is None:
            return False
        if not self._idle.is_set():
            logger.warning("the report history's last minutes were not written: an earlier write to the store is "
                           "still running")
            return False
        return await self.write(timeout=timeout)

    async def _in_turn(self, work: Callable[[], None], timeout: float, what: str) -> bool:
        """Run `work` in a daemon thread, one at a time; log (once while it lasts) when it fails or is slow."""
        self._idle.clear()

        def run() -> None:
            try:
                work()
            finally:
                self._idle.set()

        try:
            done = await in_daemon_thread(run, timeout, name="vigil-report-history")
        except Exception as exc:
            if not self._failing:
                logger.warning("%s failed (tried again at the next tick): %s", what, exc)
            self._failing = True
            return False
        if not done:
            if not self._failing:
                logger.warning("%s took longer than %.1fs; going on without it", what, timeout)
            self._failing = True
            return False
        if self._failing:
            logger.info("the report history reaches the store again")
        self._failing = False
        return True
