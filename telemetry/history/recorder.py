"""The report history's schedule: a tick every few seconds and at each minute's end, the state file loaded at start
and saved every so often and at close, always within a time limit (a slow disk never holds the server up)."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

from vigil.telemetry.export.daemon_threads import in_daemon_thread
from vigil.telemetry.history.minutes import MINUTE_SECONDS
from vigil.telemetry.history.report_history import ReportHistory
from vigil.telemetry.history.state_file import StateFileError, load_state, save_state

logger = logging.getLogger(__name__)


class HistoryRecorder:
    """Keeps a `ReportHistory` filled and, with a state file, saved.

    >>> recorder = HistoryRecorder(history, state_file=Path("history.json"), save_interval_seconds=60)
    >>> await recorder.start()        # loads the state file, records this start
    >>> await recorder.close(timeout=5)
    """

    def __init__(self, history: ReportHistory, *, state_file: Path | None, save_interval_seconds: float,
                 tick_seconds: float = 10.0) -> None:
        if not save_interval_seconds > 0 or not tick_seconds > 0:
            raise ValueError("save_interval_seconds and tick_seconds must be positive")
        self.history = history
        self.state_file = state_file
        self._save_interval = save_interval_seconds
        self._tick = tick_seconds
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> bool:
        """Add the state file's history (read in a worker thread); a missing file is a first start, an unreadable
        one is logged and left alone (never fatal). True when a history was loaded."""
        if self.state_file is None:
            return False
        try:
            state = await asyncio.to_thread(load_state, self.state_file)
        except StateFileError as exc:
            logger.warning("report history not restored, starting afresh: %s", exc)
            return False
        except Exception:
            logger.exception("report history not restored from %s, starting afresh", self.state_file)
            return False
        if state is None:
            return False
        try:
            self.history.restore(state)
        except Exception:
            logger.exception("report history not restored from %s, starting afresh", self.state_file)
            return False
        logger.info("report history restored from %s (%d version-minutes)", self.state_file, len(self.history))
        return True

    async def start(self) -> None:
        await self.load()
        self.history.begin()
        self._task = asyncio.create_task(self._run(), name="report-history")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_save = loop.time() + self._save_interval
        while True:
            now = self.history.now()
            to_boundary = (math.floor(now / MINUTE_SECONDS) + 1) * MINUTE_SECONDS - now
            await asyncio.sleep(min(self._tick, to_boundary + 0.01))
            try:
                self.history.tick()
            except Exception:
                logger.exception("updating the report history failed")
            if self.state_file is not None and loop.time() >= next_save:
                next_save = loop.time() + self._save_interval
                await self.save(timeout=self._save_interval)

    async def save(self, *, timeout: float) -> bool:
        """Flush the open minute and write the state file within `timeout` seconds; True when written."""
        path = self.state_file
        if path is None:
            return False
        self.history.flush()
        state = self.history.state()  # taken here: the history changes only on this thread

        def write() -> None:
            save_state(path, state)

        try:
            done = await in_daemon_thread(write, timeout, name="vigil-report-history")
        except Exception as exc:
            logger.warning("saving the report history to %s failed: %s", path, exc)
            return False
        if not done:
            logger.warning("saving the report history to %s took longer than %.1fs; going on without it", path,
                           timeout)
        return done

    async def close(self, *, timeout: float) -> bool:
        """Stop ticking, flush, and save within `timeout` seconds (True when saved)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.history.flush()
        return await self.save(timeout=timeout)

