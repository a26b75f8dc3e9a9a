"""Where the members of a fleet keep their report minutes: the store's interface (which the server's shared state
provides), and a window read from it, every member's rows merged with what this member holds that the store does
not have yet. Blocking: run it off the event loop."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from vigil.telemetry.history.member_minutes import MemberMinute, RowError, decode
from vigil.telemetry.history.minutes import MINUTE_SECONDS, minute_of
from vigil.telemetry.history.window import Window, merge_members

logger = logging.getLogger(__name__)


class MinuteStore(Protocol):
    """Rows of (member, minute, data): one per member and minute, each member writing only its own."""

    def add_minutes(self, rows: Sequence[tuple[str, int, str]]) -> None:
        """Write rows; a row already there for (member, minute) is replaced."""

    def minutes(self, since: int, until: int) -> list[tuple[str, int, str]]:
        """Every member's rows of the minutes from `since` up to (not including) `until`."""

    def first_minute(self) -> int | None:
        """The oldest minute any member wrote (None when there is none)."""

    def purge_minutes(self, before: int) -> None:
        """Delete the rows of minutes before `before`."""


class HistoryUnavailable(Exception):
    """The store's report minutes could not be read."""


def read_window(store: MinuteStore, member: str, own: Mapping[int, MemberMinute], start: float, end: float, *,
                histograms: str, duration_bounds: tuple[float, ...],
                confidence_bounds: tuple[float, ...], only: str | None = None) -> Window:
    """The fleet's window over [start, end]: every member's rows of its minutes from the store, this member's rows
    replaced by `own` (what it holds in memory: minutes not written yet, and the open one as of now); with `only`,
    that member's rows alone. Rows that cannot be read are left out, with a warning. HistoryUnavailable when the
    store cannot be read."""
    first, last = minute_of(start), minute_of(end)
    try:
        stored = store.minutes(first, last + 1)
        earliest = store.first_minute()
    except Exception as exc:
        raise HistoryUnavailable(str(exc) or type(exc).__name__) from exc
    unreadable: list[str] = []

    def rows() -> Iterator[tuple[str, int, MemberMinute]]:
        for name, m, data in stored:
            if only is not None and name != only:
                continue
            if name == member and m in own:
                continue  # this member's newer counts are in memory
            try:
                yield name, m, decode(data, histograms)
            except RowError as exc:
                unreadable.append(f"{name} minute {m}: {exc}")
        for m, minute in own.items() if only is None or only == member else ():
            yield member, m, minute

    # a history that began before the window: its first moment is only needed to know it was before the start
    before = earliest * MINUTE_SECONDS if earliest is not None and earliest < first else None
    window = merge_members(start, end, rows(), seen_before=before, duration_bounds=duration_bounds,
                           confidence_bounds=confidence_bounds)
    if unreadable:
        logger.warning("%d report minutes in the store could not be read and are left out, e.g. %s",
                       len(unreadable), unreadable[0])
    return window
