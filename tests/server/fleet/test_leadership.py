"""The fleet's lease as one member holds it: given up by its own clock before the store could hand it to another,
kept through a failed renewal, and taken by every member when the store is gone for longer than a lease."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from vigil.server.fleet.member import Fleet
from vigil.server.store.base import SharedState
from vigil.server.store.opening import open_store
from vigil.telemetry.stream.frames import Snapshot


def snapshot() -> Snapshot:
    return Snapshot(time_ns=time.time_ns(), monotonic=time.monotonic(), reading={})


def member(tmp_path: Path, name: str) -> Fleet:
    store = open_store(f"sqlite:///{tmp_path / 'vigil.db'}", retention_days=30)
    return Fleet(SharedState(store), name, tick_seconds=0.5, lease_seconds=2.0, local=snapshot)


async def test_a_stalled_leader_gives_the_lease_up_before_another_can_take_it(tmp_path: Path) -> None:
    a, b = member(tmp_path, "a"), member(tmp_path, "b")
    await a.tick()
    await b.tick()
    assert a.is_leader and not b.is_leader
    renewed = time.monotonic()
    await a.tick()

    def stalled(*args: Any) -> Any:  # the store does not answer this member for a while
        time.sleep(2.5)
        raise TimeoutError("the store did not answer")

    a._exchange = stalled  # type: ignore[method-assign]
    stuck = asyncio.create_task(a.tick())
    await asyncio.sleep(0.1)
    assert a.is_leader  # a renewal in flight: still within the lease
    while a.is_leader:
        await asyncio.sleep(0.01)
    given_up = time.monotonic() - renewed
    assert given_up < 2.0  # a tick before the lease can run out in the store
    await asyncio.sleep(2.0 - given_up + 0.1)
    await b.tick()
    assert b.is_leader and not a.is_leader  # never both
    await stuck


async def test_one_failed_renewal_keeps_the_lease_and_a_store_gone_longer_than_a_lease_leaves_each_alone(
        tmp_path: Path) -> None:
    a = member(tmp_path, "a")
    await a.tick()
    assert a.is_leader

    def gone(*args: Any) -> Any:
        raise ConnectionError("the store is down")

    exchange = a._exchange
    a._exchange = gone  # type: ignore[method-assign]
    await a.tick()
    assert a.is_leader  # one failed renewal: the lease it holds has not run out
    await asyncio.sleep(1.75)
    assert not a.is_leader  # its lease lapsed here, and the store has not been gone for a whole lease yet
    await asyncio.sleep(0.55)
    assert a.is_leader  # gone for longer than a lease: nobody can hold it, each member decides for itself
    a._exchange = exchange  # type: ignore[method-assign]
    await a.tick()
    assert a.is_leader and a._unreachable_since is None
