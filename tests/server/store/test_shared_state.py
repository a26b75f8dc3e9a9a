"""What the members of a fleet share through the store, on both real backends: summaries, the lease, shared values
and the report history's minutes."""

from __future__ import annotations

import threading
from pathlib import Path

from vigil.server.store.base import SharedState, Store
from vigil.server.store.opening import open_store

NOW = 1_796_300_000.0


def clocked(store: Store, start: float = NOW) -> list[float]:
    """A clock the test moves: `clock[0] += 5`."""
    clock = [start]
    store.clock = lambda: clock[0]
    return clock


def test_members_publish_drop_out_when_silent_and_leave(store: Store) -> None:
    shared, clock = SharedState(store), clocked(store)
    shared.publish("a", NOW - 50, '{"n": 1}')
    shared.publish("b", NOW - 10, '{"n": 2}')
    shared.publish("a", NOW - 50, '{"n": 3}')  # a newer summary replaces the older
    assert shared.members(max_age=3) == [("a", NOW - 50, NOW, '{"n": 3}'), ("b", NOW - 10, NOW, '{"n": 2}')]
    clock[0] += 2
    shared.publish("b", NOW - 10, '{"n": 4}')
    clock[0] += 2  # a's summary is 4 s old, b's 2 s
    assert [m[0] for m in shared.members(max_age=3)] == ["b"]
    shared.leave("b", stale_after=3)  # b leaves; a, silent for longer than 3 s, is swept out too
    assert shared.members(max_age=3600) == []


def test_one_holder_of_a_lease_until_it_expires_or_is_released(store: Store) -> None:
    shared, clock = SharedState(store), clocked(store)
    assert shared.hold_lease("leader", "a", 3)
    assert not shared.hold_lease("leader", "b", 3)
    clock[0] += 2
    assert shared.hold_lease("leader", "a", 3)  # renewed: now held until NOW + 5
    clock[0] += 2
    assert not shared.hold_lease("leader", "b", 3)
    clock[0] += 1.5  # a stopped renewing: expired
    assert shared.hold_lease("leader", "b", 3) and not shared.hold_lease("leader", "a", 3)
    shared.release_lease("leader", "a")  # not a's to release: nothing changes
    assert not shared.hold_lease("leader", "a", 3)
    shared.release_lease("leader", "b")
    assert shared.hold_lease("leader", "a", 3)


def test_racing_takers_get_one_holder(store: Store) -> None:
    shared = SharedState(store)
    wins: list[str] = []
    start = threading.Barrier(8)

    def take(name: str) -> None:
        start.wait()
        if shared.hold_lease("leader", name, 30):
            wins.append(name)

    threads = [threading.Thread(target=take, args=(f"m{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1


def test_shared_values_by_prefix(store: Store) -> None:
    shared = SharedState(store)
    clocked(store)
    shared.put("rollout/a", "1")
    shared.put("rollout/b", "2")
    shared.put("rollout/a", "3")
    shared.put("other", "4")
    assert shared.values("rollout/") == [("rollout/a", "3", NOW), ("rollout/b", "2", NOW)]
    shared.put("rollout/a", "newer", at=NOW + 10)
    shared.put("rollout/a", "older", at=NOW + 5)  # changed before the stored value: dropped
    assert shared.values("rollout/a") == [("rollout/a", "newer", NOW + 10)]


def test_report_minutes_are_kept_per_member_and_purged(store: Store) -> None:
    shared = SharedState(store)
    assert shared.first_minute() is None
    shared.add_minutes([("a", 100, "x"), ("b", 100, "y"), ("a", 101, "z")])
    shared.add_minutes([("a", 101, "z2")])  # a minute written again (the member's tick) is replaced
    assert shared.minutes(100, 102) == [("a", 100, "x"), ("b", 100, "y"), ("a", 101, "z2")]
    assert shared.minutes(101, 102) == [("a", 101, "z2")]
    assert shared.first_minute() == 100
    shared.purge_minutes(101)
    assert shared.minutes(0, 1000) == [("a", 101, "z2")] and shared.first_minute() == 101


def test_leases_and_summaries_go_by_the_stores_clock(store: Store) -> None:
    """PostgreSQL's own clock (hosts' clocks may differ), or the host's for a SQLite file on that host."""
    import time

    with store.transaction(write=False) as tx:
        now = store._now(tx)
    assert abs(now - time.time()) < 5
    SharedState(store).publish("a", 0.0, "{}")
    [(_, _, seen, _)] = SharedState(store).members(max_age=60)
    assert abs(seen - now) < 5


def test_short_lived_threads_leave_no_sqlite_connection_open(tmp_path: Path) -> None:
    """The report history writes and reads in a thread of its own each time: a SQLite file must not gain an open
    connection (two descriptors) per thread."""
    import os

    store = open_store(f"sqlite:///{tmp_path / 'vigil.db'}", retention_days=30)
    shared = SharedState(store)

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    def once() -> None:
        shared.add_minutes([("a", 1, "x")])
        shared.minutes(0, 10)

    for _ in range(3):  # warm up
        thread = threading.Thread(target=once)
        thread.start()
        thread.join()
    before = descriptors()
    for _ in range(30):
        thread = threading.Thread(target=once)
        thread.start()
        thread.join()
    assert descriptors() <= before + 2
    store.close()
