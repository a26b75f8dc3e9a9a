"""This process's report history: per-minute aggregates of every model version, the alerts it recorded and when it
was up, kept in bounded memory until the store holds them (or, with no store, for the retention period).

Nothing here runs on the request path. `flush` diffs a reading of the cumulative aggregates against the reading at
the last boundary and adds the difference to the open minute's buckets. The open minute is stored only when flushed;
`own_minutes` adds what it holds so far (the live reading minus the boundary), so a report is exact at any moment. A
version with no activity in a minute takes no space. Counters restart from zero with the process: the first boundary
is empty, and no difference is ever negative.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from vigil.telemetry.history.member_minutes import FiredAlert, MemberMinute, histograms_id
from vigil.telemetry.history.minutes import (
    MINUTE_SECONDS,
    Key,
    VersionMinute,
    difference,
    minute_of,
)
from vigil.telemetry.history.window import Window, merge_members
from vigil.telemetry.metrics.aggregates import Aggregates, Histogram, Reading
from vigil.telemetry.metrics.instruments import CONFIDENCE, REQUEST_DURATION

logger = logging.getLogger(__name__)

DriftReader = Callable[[], Mapping[Key, tuple[int, float]]]
"""Per monitored version with a drift result: (worst status 0–2, highest PSI) now."""


class ReportHistory:
    """This process's per-minute buckets of the aggregates, the alerts it recorded and when it was up.

    >>> history = ReportHistory(instruments.aggregates, retention_seconds=7 * 86400)
    >>> history.begin()                       # the server started
    >>> history.tick()                        # every few seconds: heartbeat, drift, closes a finished minute
    >>> history.window(time.time() - 3600)    # the last hour, for a report (of this process alone)

    With a store, `pending` gives the minutes to write and `release` forgets the closed ones written.
    """

    def __init__(self, aggregates: Aggregates, *, retention_seconds: float, drift: DriftReader | None = None,
                 clock: Callable[[], float] = time.time, max_alerts: int = 10_000) -> None:
        if not retention_seconds >= MINUTE_SECONDS:
            raise ValueError(f"retention_seconds must be at least {MINUTE_SECONDS}, got {retention_seconds}")
        if max_alerts < 1:
            raise ValueError(f"max_alerts must be at least 1, got {max_alerts}")
        members = {m.name: m for m in aggregates.members}
        duration, confidence = members.get(REQUEST_DURATION.name), members.get(CONFIDENCE.name)
        if not isinstance(duration, Histogram) or not isinstance(confidence, Histogram):
            raise ValueError(f"the aggregates must hold the histograms {REQUEST_DURATION.name} and {CONFIDENCE.name}")
        self.duration_bounds, self.confidence_bounds = duration.bounds, confidence.bounds
        self.histograms = histograms_id(self.duration_bounds, self.confidence_bounds)
        """The fingerprint of the histograms' bounds that this process's minutes are counted in."""
        self.retention_seconds = float(retention_seconds)
        self._read = aggregates.read
        self._drift = drift
        self._clock = clock
        self._max_alerts = max_alerts
        self._minutes: dict[int, dict[Key, VersionMinute]] = {}
        self._alerts: dict[int, list[FiredAlert]] = {}
        """By the minute they were recorded in."""
        self._boundary: Reading = {}
        self._open = minute_of(clock())
        self._drift_seen: dict[Key, tuple[int, float]] = {}
        self._started: float | None = None
        self._seen = 0.0
        self._released = -1
        """Minutes up to this one are kept elsewhere (the store)."""

    def __len__(self) -> int:
        """Version-minutes stored."""
        return sum(len(versions) for versions in self._minutes.values())

    @property
    def minutes(self) -> list[int]:
        """The minutes stored, oldest first."""
        return sorted(self._minutes)

    @property
    def started(self) -> float | None:
        """When this process began (`begin`)."""
        return self._started

    def now(self) -> float:
        return float(self._clock())

    def begin(self) -> None:
        """Record the start of the server (alive from now)."""
        self._started = self._seen = self.now()

    def tick(self) -> None:
        """Note the server alive, sample drift, and flush once the open minute is over."""
        now = self.now()
        self._seen = max(self._seen, now)
        for key, (status, psi) in self._read_drift().items():
            seen = self._drift_seen.get(key, (-1, 0.0))
            self._drift_seen[key] = (max(seen[0], status), max(seen[1], psi))
        if minute_of(now) > self._open:
            self.flush()

    def flush(self) -> None:
        """Add everything counted since the last flush to the open minute's buckets, and start a new boundary."""
        now = self.now()
        reading = self._read()
        self._seen = max(self._seen, now)
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
        """Keep `alert` with the open minute (so it is written once, with that minute)."""
        self._alerts.setdefault(self._open, []).append(alert)
        while sum(len(a) for a in self._alerts.values()) > self._max_alerts:
            oldest = min(self._alerts)
            self._alerts[oldest].pop(0)
            if not self._alerts[oldest]:
                del self._alerts[oldest]

    def own_minutes(self, first: int, last: int, *, now: float | None = None) -> dict[int, MemberMinute]:
        """What this process did in each minute from `first` to `last` that it still holds (the open minute's
        counts so far included), with the part of each minute it was up until `now`."""
        now = self.now() if now is None else now
        first = max(first, self._released + 1, minute_of(now - self.retention_seconds))
        if last < first:
            return {}
        versions: dict[int, dict[Key, VersionMinute]] = {m: dict(v) for m, v in self._minutes.items()
                                                         if first <= m <= last}
        if first <= self._open <= last:
            drift = dict(self._drift_seen)
            for key, (status, psi) in self._read_drift().items():
                seen = drift.get(key, (-1, 0.0))
                drift[key] = (max(seen[0], status), max(seen[1], psi))
            stored = versions.setdefault(self._open, {})
            for key, minute in self._part(self._read(), drift).items():
                stored[key] = stored[key].merged(minute) if key in stored else minute
        wanted = {m for m, v in versions.items() if v} | {m for m in self._alerts if first <= m <= last}
        started = self._started
        alive_until = max(self._seen, now)
        if started is not None:
            wanted.update(range(max(first, minute_of(started)), min(last, minute_of(alive_until)) + 1))
        out = {}
        for m in sorted(wanted):
            up = None
            if started is not None:
                begin, end = max(started, m * MINUTE_SECONDS), min(alive_until, (m + 1) * MINUTE_SECONDS)
                up = (begin, end) if end >= begin else None
            out[m] = MemberMinute(versions.get(m, {}), up, started, tuple(self._alerts.get(m, ())))
        return out

    def pending(self, *, limit: int) -> tuple[dict[int, MemberMinute], int | None]:
        """The minutes to write to the store: the closed ones not yet released (the oldest `limit` of them) and the
        open one so far; and the last closed minute among them (None when there is none)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        now = self.now()
        cut = max(self._released + 1, minute_of(now - self.retention_seconds))
        held = [m for m in (*self._minutes, *self._alerts) if m >= cut]
        if self._started is not None:
            held.append(minute_of(self._started))
        first = max(min(held, default=self._open), cut)
        through = min(self._open - 1, first + limit - 1)  # whatever happened in these minutes is among the rows
        rows = self.own_minutes(first, through, now=now) if through >= first else {}
        rows.update(self.own_minutes(self._open, max(self._open, minute_of(now)), now=now))
        return rows, through if through >= first else None

    def release(self, through: int) -> None:
        """The closed minutes up to `through` are in the store: forget them."""
        through = min(through, self._open - 1)  # the open minute changes still
        self._released = max(self._released, through)
        for m in [m for m in self._minutes if m <= through]:
            del self._minutes[m]
        for m in [m for m in self._alerts if m <= through]:
            del self._alerts[m]

    def window(self, start: float, end: float | None = None) -> Window:
        """The minutes this process holds overlapping [start, end] (the open minute's counts so far included)."""
        end = self.now() if end is None else end
        own = self.own_minutes(minute_of(start), minute_of(end), now=end)
        return merge_members(start, end, (("", m, minute) for m, minute in own.items()), seen_before=self._started,
                             duration_bounds=self.duration_bounds, confidence_bounds=self.confidence_bounds)

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
        for m in [m for m in self._alerts if (m + 1) * MINUTE_SECONDS <= cutoff]:
            del self._alerts[m]
