"""The operator report's history kept in the store (a SQLite file; a PostgreSQL database): the report of any server
sharing it counts every server's calls, a restarted server still reports the calls made before, minutes past the
retention are purged, and a stuck or unreachable store holds up neither serving nor shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.metrics import NoOpMeter

from tests.conftest import running_app
from tests.postgres import PostgresCluster
from tests.server.web.test_drift_report import get, vigil
from tests.server.web.test_reports import send, version
from vigil.server.app import App
from vigil.server.settings import ReportSettings, StoreSettings
from vigil.server.store.base import SharedState, Store
from vigil.server.store.opening import open_store
from vigil.server.store.sqlite import SqliteStore
from vigil.telemetry.history.member_minutes import MemberMinute, decode, encode
from vigil.telemetry.history.minutes import MINUTE_SECONDS, VersionMinute, minute_of
from vigil.telemetry.history.recorder import HistoryRecorder
from vigil.telemetry.history.report_history import ReportHistory
from vigil.telemetry.metrics.instruments import Instruments

FAST = ReportSettings(write_interval_seconds=0.2)
"""Each server writes its minutes five times a second, so the other's report sees them at once."""


def in_store(url: str, **overrides: object) -> StoreSettings:
    return StoreSettings.model_validate({"url": url, **overrides})


async def report_json(app: App, query: str = "since=1h") -> dict[str, Any]:
    status, text = await get(app.http_port, f"/report.json?{query}")
    assert status == 200, text
    report: dict[str, Any] = json.loads(text)
    return report


async def report_when(app: App, check: Callable[[dict[str, Any]], bool], seconds: float = 15.0) -> dict[str, Any]:
    """The first report of `app` that passes `check`: a call is counted as its handler ends, a moment after its
    caller has the answer, and another server's minutes reach the store at its next write."""
    deadline = time.monotonic() + seconds
    while True:
        report = await report_json(app)
        if check(report) or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.1)


def requests(at_least: int, classified: int = 0) -> Callable[[dict[str, Any]], bool]:
    """At least so many calls, and classifier rows counted by class (a server's quality monitor counts them
    a moment after the call, in the background)."""

    def check(report: dict[str, Any]) -> bool:
        rows = sum(sum(v["classes"].values()) for m in report["models"] for v in m["versions"])
        return bool(report["totals"]["requests"] >= at_least and rows >= classified)

    return check


async def test_the_report_of_either_server_counts_the_calls_of_both(model_repo: Path, store_url: str,
                                                                     tmp_path: Path) -> None:
    async with running_app(model_repo, store=in_store(store_url), reports=FAST) as one, \
            running_app(model_repo, store=in_store(store_url), reports=FAST) as other:
        await send(one, v1=3, v2=1, bad=2, classified=["red"])  # 7 calls, 2 of them errors
        await send(other, v1=2, v2=0, bad=1, classified=["blue", "green"])  # 5 calls, 1 error
        reports = [await report_when(app, requests(12, classified=3)) for app in (one, other)]
        await asyncio.sleep(0.5)  # more writes: nothing is counted twice
        reports.append(await report_json(one))
        out = tmp_path / "report.json"
        code, _, stderr = await vigil("report", "--since", "1h", "--json", "--http", f"127.0.0.1:{other.http_port}",
                                      "-o", str(out))
        # one member's own report, from the other server: its calls alone
        theirs = await report_json(one, f"since=1h&member={other.member_id}")
        mine = tmp_path / "mine.json"
        member_code, _, member_stderr = await vigil("report", "--since", "1h", "--json", "--member", one.member_id,
                                                    "--http", f"127.0.0.1:{other.http_port}", "-o", str(mine))
    assert code == 0, stderr
    reports.append(json.loads(out.read_text()))
    assert theirs["period"]["member"] == other.member_id and theirs["uptime"]["members"] == 1
    assert theirs["totals"]["requests"] == 5 and theirs["totals"]["errors"] == 1
    assert member_code == 0, member_stderr
    assert json.loads(mine.read_text())["totals"]["requests"] == 7
    for report in reports:
        totals = report["totals"]
        assert totals["requests"] == 12 and totals["errors"] == 3 and totals["errors_by_code"] == {
            "INVALID_ARGUMENT": 3}
        assert version(report, "add", "1")["calls_by_code"] == {"OK": 5} and version(report, "add", "1")["rows"] == 15
        assert version(report, "add", "2")["calls_by_code"] == {"INVALID_ARGUMENT": 3, "OK": 1}
        assert version(report, "classifier", "1")["classes"] == {"blue": 1, "green": 1, "red": 1}
        assert sum(p["requests"] for p in report["timeline"]["points"]) == 12
        uptime = report["uptime"]
        assert uptime["members"] == 2 and len(uptime["starts_unix"]) == 2 and uptime["ratio"] == 1.0
        # both were up at once: the mean rate is over the seconds either was up, not over their sum
        assert totals["throughput"]["mean_rps_seconds"] == pytest.approx(uptime["up_seconds"])
        assert uptime["up_seconds"] <= uptime["observed_seconds"] < 60


async def test_a_restarted_server_reports_the_calls_made_before_it_stopped(model_repo: Path, store_url: str) -> None:
    async with running_app(model_repo, store=in_store(store_url)) as before:  # writes every 10 s: only at its stop
        await send(before, v1=3, v2=1, bad=2, classified=["red"])
        await report_when(before, requests(7, classified=1))
    async with running_app(model_repo, store=in_store(store_url)) as after:
        await send(after, v1=1, v2=0, bad=1, classified=["blue"])
        report = await report_when(after, requests(10, classified=2))
    assert report["totals"]["requests"] == 10
    assert version(report, "add", "1")["calls_by_code"] == {"OK": 4}
    assert version(report, "add", "2")["calls_by_code"] == {"INVALID_ARGUMENT": 3, "OK": 1}
    assert version(report, "classifier", "1")["classes"] == {"blue": 1, "red": 1}
    uptime, throughput = report["uptime"], report["totals"]["throughput"]
    assert len(uptime["starts_unix"]) == 2 and uptime["members"] == 2
    assert uptime["observed_from_unix"] == uptime["starts_unix"][0]
    assert uptime["ratio"] < 1 and uptime["down_seconds"] > 0  # down between the runs
    assert throughput["mean_rps_seconds"] == pytest.approx(uptime["up_seconds"])  # not over the time it was down


async def test_minutes_past_the_retention_are_purged(model_repo: Path, store_url: str) -> None:
    seeding = open_store(store_url, retention_days=30)
    shared = SharedState(seeding)
    reports = ReportSettings(retention_days=1, write_interval_seconds=0.2)
    try:
        async with running_app(model_repo, store=in_store(store_url, purge_interval_seconds=0.5),
                               reports=reports) as app:
            assert app.reports is not None
            histograms = app.reports.history.histograms
            recent, old = minute_of(time.time()) - 1, minute_of(time.time() - 3 * 86400)

            def calls(m: int, n: int) -> str:  # another server's minute: n calls to add v1, up all minute
                begin = float(m * MINUTE_SECONDS)
                return encode(MemberMinute({("add", "1"): VersionMinute({("Predict", "OK"): n})},
                                           (begin, begin + MINUTE_SECONDS), begin), histograms)

            await asyncio.to_thread(shared.add_minutes, [("earlier", recent, calls(recent, 4)),
                                                         ("long-gone", old, calls(old, 9))])
            deadline = time.monotonic() + 15
            while await asyncio.to_thread(shared.first_minute) == old:
                assert time.monotonic() < deadline, "the minutes past the retention were not purged"
                await asyncio.sleep(0.1)
            week = await report_json(app, "since=7d")  # cut to the retention: a day
        left = await asyncio.to_thread(shared.minutes, old, minute_of(time.time()) + 1)
    finally:
        seeding.close()
    assert {member for member, _, _ in left} == {"earlier", app.member_id}
    assert version(week, "add", "1")["calls_by_code"] == {"OK": 4}
    assert week["uptime"]["members"] == 2 and week["period"]["clamped"]


@contextlib.contextmanager
def writes_blocked(store: Store, url: str) -> Iterator[None]:
    """Another connection holds the lock that writing the report's minutes needs, until the block ends."""
    if url.startswith("sqlite"):
        assert isinstance(store, SqliteStore) and store.path is not None
        connection = sqlite3.connect(store.path, isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.rollback()
            connection.close()
    else:
        with psycopg.connect(url) as locker:
            locker.execute("LOCK TABLE history_minutes IN EXCLUSIVE MODE")  # reads go on, writes wait
            yield
            locker.rollback()


async def test_a_stuck_store_holds_up_neither_the_ticks_nor_shutdown(store: Store, store_url: str) -> None:
    instruments = Instruments(NoOpMeter("test"))
    shared = SharedState(store)
    recorder = HistoryRecorder(ReportHistory(instruments.aggregates, retention_seconds=3600), store=shared,
                               member="stuck", tick_seconds=60)
    await recorder.start()
    instruments.requests.add(("m", "1", "Predict", "OK"), 5)
    with writes_blocked(store, store_url):
        started = time.monotonic()
        assert not await recorder.write(timeout=0.5)  # waits for the lock in its thread: given up on
        assert not await recorder.write(timeout=0.5)  # the first is still waiting: this one does not join it
        window = await recorder.window(time.time() - 600, time.time())  # reads go on
        assert not await recorder.close(timeout=0.5)
        waited = time.monotonic() - started
    assert waited < 2.5
    assert sum(v.calls[("Predict", "OK")] for _, versions in window.minutes for v in versions.values()) == 5
    deadline = time.monotonic() + 15  # the lock is free: the first write goes through
    while not (rows := shared.minutes(0, minute_of(time.time()) + 1)):
        assert time.monotonic() < deadline, "the stuck write never finished"
        await asyncio.sleep(0.1)
    written = [decode(data, recorder.history.histograms) for _, _, data in rows]
    assert sum(v.calls[("Predict", "OK")] for minute in written for v in minute.versions.values()) == 5


async def test_a_report_while_postgresql_is_down_holds_what_this_server_has_not_written(
        model_repo: Path, postgres: PostgresCluster, postgres_url: str) -> None:
    async with running_app(model_repo, store=in_store(postgres_url, connect_timeout_seconds=1)) as app:
        await send(app, v1=2, v2=0, bad=0, classified=[])
        await report_when(app, requests(2))
        postgres.stop()
        try:
            report = await report_json(app)
            _, page = await get(app.http_port, "/report?since=1h")
        finally:
            postgres.start()
    assert "the store could not be read" in report["history_note"]
    assert version(report, "add", "1")["calls_by_code"] == {"OK": 2}
    assert "the store could not be read" in page
