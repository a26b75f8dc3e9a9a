"""The report history: per-minute aggregates of every model version, the alerts fired and when the server was up,
kept in bounded memory for a retention period.

Nothing here runs on the request path. `flush` diffs a reading of the cumulative aggregates against the reading at
the last boundary and adds the difference to the open minute's buckets. The open minute is stored only when flushed;
`window` adds what it holds so far (the live reading minus the boundary), so a report is exact at any moment. A
version with no activity in a minute takes no space. Counters restart from zero with the process: the first boundary
is empty, and no difference is ever negative.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from vigil.telemetry.history.minutes import (
    MINUTE_SECONDS,
    Key,
    VersionMinute,
    difference,
    minute_of,
)
from vigil.telemetry.metrics.aggregates import Aggregates, Histogram, Reading
from vigil.telemetry.metrics.instruments import CONFIDENCE, REQUEST_DURATION

logger = logging.getLogger(__name__)

DriftReader = Callable[[], Mapping[Key, tuple[int, float]]]
"""Per monitored version with a drift result: (worst status 0–2, highest PSI) now."""


@dataclass(frozen=True)
class FiredAlert:
    """An alert that started firing."""

    name: str
    severity: str
    model: str
    version: str
    summary: str
    fired_unix: float


@dataclass(frozen=True)
class HistoryState:
    """Everything the history holds, as taken by `state` and given to `restore` (e.g. through a state file)."""

    minutes: Mapping[int, Mapping[Key, VersionMinute]]
    alerts: tuple[FiredAlert, ...]
    runs: tuple[tuple[float, float], ...]
    """(start, last seen alive) of each run of the server, oldest first."""
    first_seen: float | None
    """When the history began (its first run's start)."""
    duration_bounds: tuple[float, ...]
    confidence_bounds: tuple[float, ...]


@dataclass(frozen=True)
class Window:
    """The history between two instants: minutes overlapping it (the open one included), alerts and runs."""

    start: float
    end: float
    minutes: list[tuple[int, dict[Key, VersionMinute]]]
    alerts: list[FiredAlert]
    runs: list[tuple[float, float]]
    first_seen: float | None
    duration_bounds: tuple[float, ...]
    confidence_bounds: tuple[float, ...]


class ReportHistory:
    """Per-minute buckets of the aggregates, alerts fired and server runs, for `retention_seconds`.

    >>> history = ReportHistory(instruments.aggregates, retention_seconds=7 * 86400)
    >>> history.begin()                       # the server started
    >>> history.tick()                        # every few seconds: heartbeat, drift, closes a finished minute
    >>> history.window(time.time() - 3600)    # the last hour, for a report
    """

    def __init__(self, aggregates: Aggregates, *, retention_seconds: float, drift: DriftReader | None = None,
                 clock: Callable[[], float] = time.time, max_alerts: int = 10_000, max_runs: int = 10_000) -> None:
        if not retention_seconds >= MINUTE_SECONDS:
            raise ValueError(f"retention_seconds must be at least {MINUTE_SECONDS}, got {retention_seconds}")
        if max_alerts < 1 or max_runs < 1:
            raise ValueError("max_alerts and max_runs must be at least 1")
        members = {m.name: m for m in aggregates.members}
        duration, confidence = members.get(REQUEST_DURATION.name), members.get(CONFIDENCE.name)
        if not isinstance(duration, Histogram) or not isinstance(confidence, Histogram):
            raise ValueError(f"the aggregates must hold the histograms {REQUEST_DURATION.name} and {CONFIDENCE.name}")
        self.duration_bounds, self.confidence_bounds = duration.bounds, confidence.bounds
        self.retention_seconds = float(retention_seconds)
        self._read = aggregates.read
        self._drift = drift
        self._clock = clock
        self._minutes: dict[int, dict[Key, VersionMinute]] = {}
        self._boundary: Reading = {}
        self._open = minute_of(clock())
        self._drift_seen: dict[Key, tuple[int, float]] = {}
        self._alerts: deque[FiredAlert] = deque(maxlen=max_alerts)
        self._runs: deque[list[float]] = deque(maxlen=max_runs)
        self._first_seen: float | None = None

    def __len__(self) -> int:
        """Version-minutes stored."""
        return sum(len(versions) for versions in self._minutes.values())

    @property
    def minutes(self) -> list[int]:
        """The minutes stored, oldest first."""
        return sorted(self._minutes)

    def now(self) -> float:
        return float(self._clock())

    def begin(self) -> None:
        """Record a start of the server (a new run, alive from now)."""
        now = self.now()
        self._runs.append([now, now])
        if self._first_seen is None:
            self._first_seen = now

    def tick(self) -> None:
        """Note the server alive, sample drift, and flush once the open minute is over."""
        now = self.now()
        if self._runs:
            self._runs[-1][1] = now
        for key, (status, psi) in self._read_drift().items():
            seen = self._drift_seen.get(key, (-1, 0.0))
            self._drift_seen[key] = (max(seen[0], status), max(seen[1], psi))
        if minute_of(now) > self._open:
            self.flush()

    def flush(self) -> None:
        """Add everything counted since the last flush to the open minute's buckets, and start a new boundary."""
        now = self.now()
        reading = self._read()
        if self._runs:
            self._runs[-1][1] = now
        part = self._part(reading, self._drift_seen)
        if part:
            stored = self._minutes.setdefault(self._open, {})
            for key, minute in part.items():
                stored[key] = stored[key].merged(minute) if key in stored else minute
        self._boundary = reading
        self._drift_seen = {}
        self._open = max(self._open, minute_of(now))
        self._prune(now)

    def record_alert(self, alert: FiredAlert) -> None:
        self._alerts.append(alert)

    def window(self, start: float, end: float | None = None) -> Window:
        """The minutes overlapping [start, end] (the open minute's counts so far included when it overlaps)."""
        end = self.now() if end is None else end
        first, last = minute_of(start), minute_of(end)
        minutes = {m: dict(v) for m, v in self._minutes.items() if first <= m <= last}
        if first <= self._open <= last:
            drift = dict(self._drift_seen)
            for key, (status, psi) in self._read_drift().items():
                seen = drift.get(key, (-1, 0.0))
                drift[key] = (max(seen[0], status), max(seen[1], psi))
            stored = minutes.setdefault(self._open, {})
            for key, minute in self._part(self._read(), drift).items():
                stored[key] = stored[key].merged(minute) if key in stored else minute
        runs = [(s, e) for s, e in self._runs]
        if runs:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))  # this run is alive now
        return Window(start, end, sorted((m, v) for m, v in minutes.items() if v),
                      [a for a in self._alerts if start <= a.fired_unix <= end],
                      [(s, e) for s, e in runs if e >= start and s <= end], self._first_seen,
                      self.duration_bounds, self.confidence_bounds)

    # -- state ---------------------------------------------------------------------------------------------------

    def state(self) -> HistoryState:
        """A copy of what is stored (the open minute's counts since the last flush are not: flush first)."""
        return HistoryState({m: dict(v) for m, v in self._minutes.items()}, tuple(self._alerts),
                            tuple((s, e) for s, e in self._runs), self._first_seen, self.duration_bounds,
                            self.confidence_bounds)

    def restore(self, state: HistoryState) -> None:
        """Add a saved history (of earlier runs) to this one. Histograms with other bounds than today's are
        dropped, with a warning; counts are kept."""
        same = (tuple(state.duration_bounds) == self.duration_bounds
                and tuple(state.confidence_bounds) == self.confidence_bounds)
        if not same:
            logger.warning("the saved report history has other histogram buckets than this server: its latency and "
                           "confidence distributions are left out")
        for m, versions in state.minutes.items():
            stored = self._minutes.setdefault(m, {})
            for key, minute in versions.items():
                if not same:
                    minute = replace(minute, duration=(), duration_sum=0.0, confidence=(), confidence_sum=0.0)
                stored[key] = stored[key].merged(minute) if key in stored else minute
        alerts = sorted([*state.alerts, *self._alerts], key=lambda a: a.fired_unix)
        self._alerts = deque(alerts, maxlen=self._alerts.maxlen)
        runs = sorted([*([s, e] for s, e in state.runs), *self._runs])
        self._runs = deque(runs, maxlen=self._runs.maxlen)
        if state.first_seen is not None:
            self._first_seen = min(state.first_seen, self._first_seen or math.inf)
        self._prune(self.now())

    # -- internals -----------------------------------------------------------------------------------------------

    def _read_drift(self) -> Mapping[Key, tuple[int, float]]:
        if self._drift is None:
            return {}
        try:
            return self._drift()
        except Exception:  # a report must not fail because one monitor did
            logger.exception("reading drift results for the report history failed")
            return {}

    def _part(self, reading: Reading, drift: Mapping[Key, tuple[int, float]]) -> dict[Key, VersionMinute]:
        """Per version, what `reading` counted beyond the boundary (only versions that did something)."""
        out = difference(reading, self._boundary)
        for key, (status, psi) in drift.items():
            if key in out:
                out[key] = out[key].with_drift(status, psi)
        return out

    def _prune(self, now: float) -> None:
        cutoff = now - self.retention_seconds
        for m in [m for m in self._minutes if (m + 1) * MINUTE_SECONDS <= cutoff]:
            del self._minutes[m]
        while self._alerts and self._alerts[0].fired_unix < cutoff:
            self._alerts.popleft()
        while len(self._runs) > 1 and self._runs[0][1] < cutoff:
            self._runs.popleft()
