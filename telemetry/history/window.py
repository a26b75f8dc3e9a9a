"""A window of the report history: the minutes of every member of the fleet in a period, merged (counts added,
drift the worst), with the alerts fired, when some member was up, and the members' starts."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from vigil.telemetry.history.member_minutes import FiredAlert, MemberMinute
from vigil.telemetry.history.minutes import Key, VersionMinute, merge_all


@dataclass(frozen=True)
class Window:
    """The history between two instants: minutes overlapping it (the open one included), alerts fired in it, and
    the fleet's presence."""

    start: float
    end: float
    minutes: list[tuple[int, dict[Key, VersionMinute]]]
    """Each minute with counts, oldest first: per version, every member's counts added."""
    alerts: list[FiredAlert]
    up: list[tuple[float, float]]
    """When at least one member was up: disjoint (from, to) intervals, oldest first."""
    starts: list[float]
    """When members started, within the window."""
    first_seen: float | None
    """When the history began (the first member's first moment up), None when nobody ever was."""
    members: int
    """Members with minutes in the window."""
    duration_bounds: tuple[float, ...]
    confidence_bounds: tuple[float, ...]


def merge_members(start: float, end: float, rows: Iterable[tuple[str, int, MemberMinute]], *,
                  seen_before: float | None, duration_bounds: tuple[float, ...],
                  confidence_bounds: tuple[float, ...]) -> Window:
    """The window over [start, end] of the (member, minute, what it did) rows of the minutes overlapping it;
    `seen_before` is when the history began, when that was before these rows."""
    by_minute: dict[int, dict[Key, list[VersionMinute]]] = {}
    alerts: dict[tuple[str, str, str, str, float], FiredAlert] = {}
    intervals: list[tuple[float, float]] = []
    starts: set[float] = set()
    members: set[str] = set()
    first_seen = seen_before
    for member, m, minute in rows:
        members.add(member)
        if minute.versions:
            versions = by_minute.setdefault(m, {})
            for key, counts in minute.versions.items():
                versions.setdefault(key, []).append(counts)
        for alert in minute.alerts:
            if start <= alert.fired_unix <= end:  # recorded once, by one member: a copy is the same alert
                alerts[(alert.name, alert.model, alert.version, alert.summary, alert.fired_unix)] = alert
        if minute.up is not None:
            intervals.append(minute.up)
            first_seen = minute.up[0] if first_seen is None else min(first_seen, minute.up[0])
        if minute.started is not None and start <= minute.started <= end:
            starts.add(minute.started)
    merged = [(m, {key: parts[0] if len(parts) == 1 else merge_all(parts) for key, parts in versions.items()})
              for m, versions in sorted(by_minute.items())]
    return Window(start, end, merged, sorted(alerts.values(), key=lambda a: a.fired_unix), union(intervals),
                  sorted(starts), first_seen, len(members), duration_bounds, confidence_bounds)


def union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Disjoint intervals covering the same time, oldest first (touching ones joined)."""
    out: list[tuple[float, float]] = []
    for begin, end in sorted(intervals):
        if out and begin <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((begin, end))
    return out


def covered(up: list[tuple[float, float]], begin: float, end: float) -> float:
    """Seconds of [begin, end] inside the disjoint intervals `up`."""
    total = 0.0
    for i in range(bisect_right(up, begin, key=lambda interval: interval[1]), len(up)):
        a, b = up[i]
        if a >= end:
            break
        total += min(b, end) - max(a, begin)
    return total
