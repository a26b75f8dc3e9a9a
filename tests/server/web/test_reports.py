"""The operator report (`/report`, `/report.json`, `vigil report --since`) from the server's retained history."""

from __future__ import annotations

import json
import logging
import os
import time
from bisect import bisect_left
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.metrics import NoOpMeter

from tests.conftest import expect, running_app
from tests.server.test_errors import ab, request
from tests.server.web.test_drift_report import get, vigil
from vigil.clients import AsyncClient
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.app import App
from vigil.server.settings import AlertRuleSettings, AlertSettings, ReportSettings, TelemetrySettings
from vigil.telemetry.history.minutes import difference
from vigil.telemetry.history.period import summarize
from vigil.telemetry.history.recorder import HistoryRecorder
from vigil.telemetry.history.report_history import FiredAlert, ReportHistory
from vigil.telemetry.history.state_file import load_state, save_state
from vigil.telemetry.metrics.instruments import Instruments

ONE_HOT = {"red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0, 1]}
ADD_ERRORS = AlertSettings(rules=[AlertRuleSettings(
    name="AddErrors", signal="error_ratio", op=">", threshold=0, severity="warning", model="add",
    summary="{model} v{version}: error ratio {value}", params={"window": "5m"})])
"""A rule that fires at the first evaluation after a failed call to `add`."""


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def send(app: App, *, v1: int, v2: int, bad: int, classified: list[str]) -> list[str]:
    """Predict calls to add v1 and v2, calls to add v2 with an input missing (INVALID_ARGUMENT), and one classifier
    call of one row per label; returns the classifier calls' request ids."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        stub = inference_pb2_grpc.InferenceStub(channel)
        for _ in range(v1):
            await stub.Predict(request("add", 1, **ab(rows=3)))
        for _ in range(v2):
            await stub.Predict(request("add", 2, **ab(rows=1)))
        for _ in range(bad):
            await expect(stub.Predict(request("add", 2, a=np.ones((2, 4), np.float32))),
                         grpc.StatusCode.INVALID_ARGUMENT, "missing input 'b'")
        ids = []
        for label in classified:
            ids.append((await client.predict("classifier", np.asarray([ONE_HOT[label]], np.float32))).request_id)
        return ids


async def report_json(app: App, query: str = "since=1h") -> dict:
    status, text = await get(app.http_port, f"/report.json?{query}")
    assert status == 200, text
    return json.loads(text)


def version(report: dict, model: str, number: str) -> dict:
    entry = next(m for m in report["models"] if m["model"] == model)
    return next(v for v in entry["versions"] if v["version"] == number)


async def test_report_totals_equal_the_traffic_sent(model_repo: Path) -> None:
    async with running_app(model_repo, alerts=ADD_ERRORS) as app:
        assert app.reports is not None and app.monitoring is not None and app.monitoring.alerts is not None
        app.monitoring.alerts.evaluate()  # the error ratio's baseline
        ids = await send(app, v1=7, v2=4, bad=3, classified=["red", "red", "blue"])
        async with AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
            await client.feedback(ids[0], ["red"])
            await client.feedback(ids[2], ["green"])  # predicted blue: wrong
        app.monitoring.alerts.evaluate()
        first = await report_json(app)  # the open minute only: nothing flushed yet
        app.reports.history.flush()  # part of the minute stored, the rest still open
        await send(app, v1=2, v2=0, bad=1, classified=[])
        second = await report_json(app)
        status, page = await get(app.http_port, "/report?since=1h")
    assert version(first, "add", "1")["requests"] == 7
    v1, v2 = version(second, "add", "1"), version(second, "add", "2")
    assert v1["calls_by_code"] == {"OK": 9} and v1["rows"] == 27
    assert v2["calls_by_code"] == {"INVALID_ARGUMENT": 4, "OK": 4} and v2["rows"] == 4
    assert v2["errors_by_code"] == {"INVALID_ARGUMENT": 4} and v2["error_ratio"] == 0.5
    assert v1["calls_by_method"] == {"Predict": {"OK": 9}}
    classifier = version(second, "classifier", "1")
    assert classifier["calls_by_method"] == {"Feedback": {"OK": 2}, "Predict": {"OK": 3}}
    assert classifier["classes"] == {"blue": 1, "red": 2}
    assert classifier["feedback_rows"] == 2 and classifier["correct_rows"] == 1 and classifier["accuracy"] == 0.5
    assert [sum(column) for column in zip(*classifier["class_timeline"], strict=True)] == [1, 2]  # blue, red
    totals = second["totals"]
    assert totals["requests"] == 9 + 8 + 5 and totals["errors"] == 4
    assert totals["errors_by_code"] == {"INVALID_ARGUMENT": 4} and totals["error_ratio"] == pytest.approx(4 / 22)
    assert sum(p["requests"] for p in second["timeline"]["points"]) == 22
    busiest = max(p["requests"] for p in second["timeline"]["points"])
    assert second["timeline"]["step_seconds"] == 60 and totals["throughput"]["peak_rps"] == pytest.approx(busiest / 60)
    assert all(totals["latency_ms"][q] > 0 for q in ("p50", "p95", "p99"))
    assert totals["latency_ms"]["p50"] <= totals["latency_ms"]["p95"] <= totals["latency_ms"]["p99"]
    assert second["uptime"]["ratio"] == 1.0 and len(second["uptime"]["starts_unix"]) == 1
    [alert] = second["alerts"]
    assert (alert["name"], alert["severity"], alert["model"], alert["version"]) == ("AddErrors", "warning", "add", "2")
    assert second["period"]["seconds"] == 3600 and not second["period"]["clamped"]
    # the page: headline total, the plots, the drift and accuracy section
    assert status == 200 and "<b id='total-requests'>22</b>" in page
    for plot in ("requests", "p99", "errors", "classes"):
        assert f'data-plot="{plot}"' in page
    assert "AddErrors" in page and "No reference profile" in page


async def test_report_of_one_model_and_bad_periods(model_repo: Path) -> None:
    async with running_app(model_repo, reports=ReportSettings(retention_days=1)) as app:
        await send(app, v1=2, v2=1, bad=0, classified=["green"])
        only_add = await report_json(app, "since=30m&model=add")
        clamped = await report_json(app, "since=7d")
        _, clamped_page = await get(app.http_port, "/report?since=7d")
        bad = await get(app.http_port, "/report.json?since=yesterday")
        short = await get(app.http_port, "/report?since=10s")
        missing = await get(app.http_port, "/report?model=nope")
    assert [m["model"] for m in only_add["models"]] == ["add"] and only_add["totals"]["requests"] == 3
    assert only_add["quality"] == []  # add is not a classifier
    assert clamped["period"]["clamped"] and clamped["period"]["seconds"] == 86400
    assert clamped["period"]["requested_seconds"] == 7 * 86400 and clamped["totals"]["requests"] == 4
    assert "7d was asked for, but the server keeps 1 days of history" in clamped_page
    assert bad[0] == 400 and "since must be a period like 30m, 24h or 7d, not 'yesterday'" in bad[1]
    assert short[0] == 400 and "at least 1m" in short[1]
    assert missing[0] == 404 and "'nope' is not monitored" in missing[1]


async def test_history_survives_a_restart_and_a_corrupt_state_file_is_ignored(
        model_repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state" / "history.json"
    reports = ReportSettings(state_file=state)
    async with running_app(model_repo, reports=reports) as app:
        await send(app, v1=3, v2=1, bad=2, classified=["red"])
    assert state.is_file()
    async with running_app(model_repo, reports=reports) as app:
        await send(app, v1=1, v2=0, bad=1, classified=["blue"])
        report = await report_json(app)
    assert version(report, "add", "1")["calls_by_code"] == {"OK": 4}
    assert version(report, "add", "2")["calls_by_code"] == {"INVALID_ARGUMENT": 3, "OK": 1}
    assert version(report, "classifier", "1")["classes"] == {"blue": 1, "red": 1}
    assert report["totals"]["requests"] == 4 + 4 + 2
    assert len(report["uptime"]["starts_unix"]) == 2 and report["uptime"]["ratio"] < 1  # down between the runs
    state.write_text('{"format": "vigil-report-history", "version": 1, "minutes": [{"minute": "x"')
    with caplog.at_level(logging.WARNING, logger="vigil.telemetry.history.recorder"):
        async with running_app(model_repo, reports=reports) as app:
            await send(app, v1=1, v2=0, bad=0, classified=[])
            fresh = await report_json(app)
    assert "report history not restored, starting afresh" in caplog.text
    assert fresh["totals"]["requests"] == 1 and len(fresh["uptime"]["starts_unix"]) == 1
    assert load_state(state) is not None  # saved again at shutdown, readable


async def test_cli_saves_the_report_as_json(model_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    async with running_app(model_repo) as app:
        await send(app, v1=5, v2=2, bad=1, classified=["red", "green"])
        code, stdout, stderr = await vigil("report", "--since", "1h", "--json", "--http",
                                           f"127.0.0.1:{app.http_port}", "-o", str(out))
        bad = await vigil("report", "--since", "soon", "--http", f"127.0.0.1:{app.http_port}")
    assert (code, stdout, stderr) == (0, f"wrote {out}\n", "")
    report = json.loads(out.read_text())
    assert report["period"]["since"] == "1h" and report["totals"]["requests"] == 10
    assert version(report, "add", "2")["calls_by_code"] == {"INVALID_ARGUMENT": 1, "OK": 2}
    assert bad[0] != 0 and "400 since must be a period like" in bad[2]


async def test_report_needs_telemetry(model_repo: Path) -> None:
    async with running_app(model_repo, telemetry=TelemetrySettings(enabled=False)) as app:
        status, text = await get(app.http_port, "/report.json")
    assert status == 503 and "telemetry is turned off" in text


def test_percentiles_fall_in_the_bucket_of_the_true_value() -> None:
    instruments = Instruments(NoOpMeter("test"))
    clock = Clock()
    history = ReportHistory(instruments.aggregates, retention_seconds=3600, clock=clock)
    rng = np.random.default_rng(7)
    values = []
    for minute in range(5):  # several minutes, each stored apart, merged by the summary
        sample = rng.lognormal(-5 + minute * 0.3, 1.0, 400)
        values.extend(sample)
        for v in sample:
            instruments.request_duration.record(float(v), ("m", "1", "Predict"))
            instruments.requests.add(("m", "1", "Predict", "OK"))
        clock.now += 60
        history.tick()
    latency = summarize(history.window(clock.now - 3600))["totals"]["latency_ms"]
    bounds = instruments.request_duration.bounds
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        truth = float(np.quantile(values, q, method="inverted_cdf"))
        assert bisect_left(bounds, latency[name] / 1e3) == bisect_left(bounds, truth), name
    assert len(history.minutes) == 5


def test_retention_drops_old_minutes_and_idle_versions_take_no_space() -> None:
    instruments = Instruments(NoOpMeter("test"))
    clock = Clock()
    history = ReportHistory(instruments.aggregates, retention_seconds=3600, clock=clock)
    history.begin()
    for minute in range(180):  # three hours, one call a minute; a second version busy every tenth minute only
        instruments.requests.add(("m", "1", "Predict", "OK"))
        if minute % 10 == 0:
            instruments.requests.add(("m", "2", "Predict", "OK"))
        if minute == 5:
            history.record_alert(FiredAlert("Old", "warning", "m", "1", "long ago", clock.now))
        clock.now += 60
        history.tick()
    assert len(history.minutes) == 60 and history.minutes[0] * 60 >= clock.now - 3600 - 60
    assert len(history) == 60 + 6  # version 2 only in the minutes it was busy
    window = history.window(0)
    assert sum(sum(v.calls.values()) for _, versions in window.minutes for v in versions.values()) == 66
    assert window.alerts == []  # fired before the retention


async def test_a_stuck_disk_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    state = tmp_path / "history.json"
    os.mkfifo(tmp_path / ".history.json.tmp")  # opening it to write blocks until someone reads: a stuck disk
    recorder = HistoryRecorder(ReportHistory(Instruments(NoOpMeter("test")).aggregates, retention_seconds=3600),
                               state_file=state, save_interval_seconds=60)
    await recorder.start()
    started = time.monotonic()
    saved = await recorder.close(timeout=0.5)
    waited = time.monotonic() - started
    fd = os.open(tmp_path / ".history.json.tmp", os.O_RDONLY | os.O_NONBLOCK)  # lets the stuck writer finish
    os.close(fd)
    assert not saved and waited < 2 and not state.exists()


def test_history_arguments_are_checked() -> None:
    aggregates = Instruments(NoOpMeter("test")).aggregates
    with pytest.raises(ValueError, match="retention_seconds must be at least 60"):
        ReportHistory(aggregates, retention_seconds=10)
    with pytest.raises(ValueError, match="max_alerts"):
        ReportHistory(aggregates, retention_seconds=60, max_alerts=0)


def test_a_counter_reset_never_counts_negative() -> None:
    before = Instruments(NoOpMeter("test"))
    before.requests.add(("m", "1", "Predict", "OK"), 10)
    after = Instruments(NoOpMeter("test"))  # a restarted process counts from zero
    after.requests.add(("m", "1", "Predict", "OK"), 3)
    assert difference(after.aggregates.read(), before.aggregates.read()) == {}


def test_a_saved_history_adds_to_the_next_one(tmp_path: Path) -> None:
    clock = Clock()
    first = Instruments(NoOpMeter("test"))
    history = ReportHistory(first.aggregates, retention_seconds=3600, clock=clock)
    history.begin()
    first.requests.add(("m", "1", "Predict", "OK"), 5)
    first.predictions.add(("m", "1", "yes"), 4)
    history.flush()
    save_state(tmp_path / "h.json", history.state())
    clock.now += 30
    second = Instruments(NoOpMeter("test"))
    restarted = ReportHistory(second.aggregates, retention_seconds=3600, clock=clock)
    state = load_state(tmp_path / "h.json")
    assert state is not None
    restarted.restore(state)
    restarted.begin()
    second.requests.add(("m", "1", "Predict", "OK"), 2)
    [(_, versions)] = restarted.window(clock.now - 600).minutes  # the same minute, before and after the restart
    assert versions[("m", "1")].calls == {("Predict", "OK"): 7} and versions[("m", "1")].predictions == {"yes": 4}
