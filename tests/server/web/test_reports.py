"""The operator report (`/report`, `/report.json`, `vigil report --since`) from the server's retained history."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from bisect import bisect_left
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

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
from vigil.server.settings import (
    AlertRuleSettings,
    AlertSettings,
    FleetSettings,
    QualitySettings,
    ReportSettings,
    TelemetrySettings,
)
from vigil.server.web.plots import stacked
from vigil.telemetry.history.member_minutes import FiredAlert
from vigil.telemetry.history.minutes import difference
from vigil.telemetry.history.period import summarize
from vigil.telemetry.history.report_history import ReportHistory
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
    call of one row per label, each counted in the report before it returns; returns the classifier calls' request
    ids."""
    before = (await report_json(app))["totals"]["requests"]
    ids = await _calls(app, v1=v1, v2=v2, bad=bad, classified=classified)
    # a call is counted as its handler ends, a moment after its caller has the answer
    deadline = time.monotonic() + 10
    while (await report_json(app))["totals"]["requests"] < before + v1 + v2 + bad + len(classified):
        assert time.monotonic() < deadline, "the calls sent were not counted"
        await asyncio.sleep(0.05)
    return ids


async def _calls(app: App, *, v1: int, v2: int, bad: int, classified: list[str]) -> list[str]:
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
    throughput = totals["throughput"]
    assert second["timeline"]["step_seconds"] == 60
    assert throughput["peak_requests"] in [p["requests"] for p in second["timeline"]["points"]]
    assert throughput["peak_rps"] == pytest.approx(throughput["peak_requests"] / throughput["peak_rps_seconds"])
    assert throughput["peak_rps"] >= throughput["mean_rps"] * (1 - 1e-9)
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


async def test_without_a_store_the_history_stays_in_memory(model_repo: Path) -> None:
    async with running_app(model_repo, quality=QualitySettings(enabled=False),
                           fleet=FleetSettings(enabled=False)) as app:
        assert app.store is None and app.reports is not None and app.reports.store is None
        await send(app, v1=2, v2=1, bad=1, classified=["red"])
        report = await report_json(app)
    assert report["totals"]["requests"] == 5 and "history_note" not in report
    assert version(report, "add", "2")["calls_by_code"] == {"INVALID_ARGUMENT": 1, "OK": 1}
    assert report["uptime"]["members"] == 1 and report["uptime"]["ratio"] == 1.0


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


class Tables(HTMLParser):
    """Every table of a page outside the drift and accuracy section: its rows, each a list of (tag, text, colspan)
    cells, and the attributes of each row."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: list[dict[str, Any]] = []
        self._stack: list[dict[str, Any]] = []
        self._cell: list[Any] | None = None
        self._skip = 0
        self.feed(page.split("<div class='quality'>")[0])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self._skip += 1
        elif tag == "table":
            self._stack.append({"class": dict(attrs).get("class"), "rows": [], "row_attrs": []})
        elif tag == "tr" and self._stack:
            self._stack[-1]["rows"].append([])
            self._stack[-1]["row_attrs"].append(dict(attrs))
        elif tag in ("td", "th") and self._stack:
            self._cell = [tag, "", int(dict(attrs).get("colspan") or 1), dict(attrs).get("class") or ""]
            self._stack[-1]["rows"][-1].append(self._cell)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._skip -= 1
        elif tag == "table" and self._stack:
            self.tables.append(self._stack.pop())
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._skip:
            self._cell[1] += data

    def table(self, name: str) -> list[dict[str, str]]:
        """The rows of the table of class `name`, each as {header: text}."""
        [table] = [t for t in self.tables if t["class"] == name]
        head = [c[1] for c in table["rows"][0]]
        return [dict(zip(head, (c[1] for c in row), strict=True)) for row in table["rows"][1:]]


async def send_more(app: App) -> None:
    """Calls that named no model (a listing, a version that does not exist: refused before it resolved) and one
    that named a model but no version (a load)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        await client.load_model("add")
        await client.list_models()
        await expect(inference_pb2_grpc.InferenceStub(channel).Predict(request("add", 7, **ab())),
                     grpc.StatusCode.NOT_FOUND, "version 7")


async def test_report_rates_are_over_the_time_the_server_existed(model_repo: Path) -> None:
    async with running_app(model_repo) as app:
        await send(app, v1=6, v2=3, bad=2, classified=["red"])
        report = await report_json(app, "since=24h")
        _, page = await get(app.http_port, "/report?since=24h")
    throughput, uptime, requests = report["totals"]["throughput"], report["uptime"], report["totals"]["requests"]
    assert requests == 12
    # the server was up a few seconds of the 24 hours: the mean is over those, not over the day
    assert throughput["mean_rps_seconds"] == uptime["observed_seconds"] < 60
    assert throughput["mean_rps_from_unix"] == uptime["observed_from_unix"] == uptime["starts_unix"][0]
    assert throughput["mean_rps_from_unix"] > report["period"]["from_unix"]
    assert throughput["mean_rps"] == pytest.approx(requests / throughput["mean_rps_seconds"])
    assert throughput["peak_rps"] >= throughput["mean_rps"] * (1 - 1e-9)
    assert throughput["peak_rps_seconds"] < 60  # the busiest minute is the one the server started in
    [shown] = re.findall(r"<span id='mean-rps'>([^<]*)</span>", page)
    assert re.fullmatch(r"\d+\.\d\d", shown) and float(shown) > 12 / 120  # 12 / 86400 would show 0.00
    assert "the server's first start, after the period's start" in html.unescape(page)


def test_mean_and_peak_rates_count_only_the_seconds_the_server_existed() -> None:
    instruments = Instruments(NoOpMeter("test"))
    boundary = 28_333_334 * 60  # a minute's start
    clock = Clock(boundary + 30)
    history = ReportHistory(instruments.aggregates, retention_seconds=7 * 86400, clock=clock)
    history.begin()  # half a minute into the first minute
    instruments.requests.add(("m", "1", "Predict", "OK"), 30)  # 30 calls in its 30 seconds: 1 a second
    clock.now = boundary + 60
    history.tick()
    for _ in range(10):  # then ten minutes at 6 calls a minute
        instruments.requests.add(("m", "1", "Predict", "OK"), 6)
        clock.now += 60
        history.tick()
    instruments.requests.add(("", "", "ListModels", "OK"), 4)  # named no model: counted apart
    report = summarize(history.window(clock.now - 86400))
    throughput = report["totals"]["throughput"]
    assert report["totals"]["requests"] == 90 and report["totals"]["other_calls"] == {"OK": 4}
    assert throughput["mean_rps_seconds"] == 630 == report["uptime"]["observed_seconds"]
    assert throughput["mean_rps_from_unix"] == boundary + 30
    assert throughput["mean_rps"] == pytest.approx(90 / 630)
    assert throughput["peak_rps"] == pytest.approx(1.0) and throughput["peak_rps_seconds"] == 30
    assert throughput["peak_minute_unix"] == boundary and throughput["peak_requests"] == 30
    # a period inside the server's life: over the whole period
    inner = summarize(history.window(clock.now - 300))["totals"]["throughput"]
    assert inner["mean_rps_seconds"] == 300 and inner["mean_rps_from_unix"] == clock.now - 300
    # a burst in the first second of a minute just begun is not the busiest rate: it counts over 15 s at least
    instruments.requests.add(("m", "1", "Predict", "OK"), 12)
    clock.now += 1
    history.tick()
    burst = summarize(history.window(clock.now - 86400))["totals"]["throughput"]
    assert burst["peak_rps"] == pytest.approx(1.0) and burst["peak_minute_unix"] == boundary  # 12 / 15 s < 1


async def test_report_totals_are_the_models_table_sums_and_other_calls_are_apart(model_repo: Path) -> None:
    async with running_app(model_repo) as app:
        await send(app, v1=3, v2=2, bad=2, classified=["red", "blue"])
        await send_more(app)
        for _ in range(50):  # a call is counted as its handler ends, a moment after its caller has the answer
            report = await report_json(app)
            if "NOT_FOUND" in report["totals"]["other_calls"]:
                break
            await asyncio.sleep(0.1)
        _, page = await get(app.http_port, "/report?since=1h")
    totals = report["totals"]
    versions = [v for m in report["models"] for v in m["versions"]]
    assert totals["requests"] == sum(m["requests"] for m in report["models"]) == sum(v["requests"] for v in versions)
    assert totals["requests"] == 3 + 4 + 2 + 1  # the load named the model: it is counted, in a row of its own
    assert totals["errors"] == sum(m["errors"] for m in report["models"]) == 2
    other = sum(totals["other_calls"].values())
    assert totals["other_calls"]["NOT_FOUND"] == 1 and other >= 2  # the unknown version and the listing
    tables = Tables(page)
    rows = tables.table("models")
    assert sum(int(r["requests"]) for r in rows) == totals["requests"]
    assert f"<b id='total-requests'>{totals['requests']}</b>: the sum of the Models table" in page
    assert f"<span id='other-calls'>{other}</span>" in page
    assert "counted apart: not in the requests, errors, latency or throughput" in page
    assert f"the {other} other calls, which named no model, are in neither" in page
    # the load named no version: its row says what it holds, never a blank cell
    no_version = version(report, "add", "")
    assert no_version["calls_by_method"] == {"LoadModel": {"OK": 1}} and no_version["version_note"]
    [row] = [r for r in rows if r["version"].startswith("(no version")]
    assert row["model"] == "add" and "refused before a version was chosen" in row["version"]
    assert "LoadModel 1" in row["version"]
    assert all(cell.strip() for r in rows for cell in r.values())


async def test_every_report_table_column_has_a_header(model_repo: Path) -> None:
    async with running_app(model_repo) as app:
        await send(app, v1=2, v2=1, bad=3, classified=["green"])
        await send_more(app)
        _, page = await get(app.http_port, "/report?since=1h")
    tables = Tables(page)
    assert {t["class"] for t in tables.tables} == {"totals", "errors", "models", "classes"}
    for table in tables.tables:
        head, *body = table["rows"]
        assert head and all(tag == "th" and text.strip() for tag, text, _, _ in head), table["class"]
        width = sum(span for _, _, span, _ in head)
        for row in body:
            assert sum(span for _, _, span, _ in row) == width, (table["class"], row)
    add_v2 = next(r for r in tables.table("models") if r["model"] == "add" and r["version"] == "2")
    assert add_v2["errors by status code"] == "INVALID_ARGUMENT 3"
    assert add_v2["drift status (max PSI)"] == "–"
    assert tables.table("errors") == [{"status code": "INVALID_ARGUMENT", "calls": "3"}]


async def test_the_class_mix_plot_has_a_legend_of_each_class_and_its_colour(model_repo: Path) -> None:
    async with running_app(model_repo) as app:
        await send(app, v1=0, v2=0, bad=0, classified=["red", "blue", "blue", "green"])
        _, page = await get(app.http_port, "/report?since=1h")
    [svg] = re.findall(r'<svg[^>]*data-plot="classes".*?</svg>', page, re.S)
    legend = re.findall(r'<g class="legend-item" data-label="([^"]*)"><rect [^>]*fill="([^"]*)"/><text [^>]*>'
                        r'([^<]*)</text></g>', svg)
    assert [(label, text) for label, _, text in legend] == [("blue", "blue"), ("green", "green"), ("red", "red")]
    bars = dict(re.findall(r'fill="([^"]*)"><title>([a-z]+): ', svg))
    assert {label: fill for fill, label in bars.items()} == {label: fill for label, fill, _ in legend}
    assert len({fill for _, fill, _ in legend}) == 3
    [height] = (float(h) for h in re.findall(r'^<svg[^>]*height="(\d+)"', svg))
    assert all(float(y) + 10 <= height for y in re.findall(r'<rect x="[^"]*" y="([^"]*)" width="10"', svg))


def test_a_legend_of_many_classes_wraps_inside_the_plot() -> None:
    labels = [f"class number {i}" for i in range(14)]
    svg = stacked(labels, [[1] * 14, [2] * 14], [0.0, 60.0], "many", plot="classes")
    [(width, height)] = ((float(w), float(h)) for w, h in re.findall(r'^<svg[^>]*width="(\d+)" height="(\d+)"', svg))
    swatches = re.findall(r'<g class="legend-item" data-label="([^"]*)"><rect x="([^"]*)" y="([^"]*)" '
                          r'width="10" height="10" fill="([^"]*)"/>', svg)
    assert [s[0] for s in swatches] == labels
    assert len({s[3] for s in swatches}) == 14  # no two classes share a colour
    for _, x, y, _ in swatches:
        assert float(x) + 10 + 4 + 6.5 * len("class number 10") <= width and float(y) + 10 <= height
    assert len({s[2] for s in swatches}) > 1  # wrapped onto more than one line


async def test_report_numbers_are_rounded_alike(model_repo: Path) -> None:
    async with running_app(model_repo) as app:
        await send(app, v1=4, v2=1, bad=1, classified=["red"])  # 1 error in 7 calls: 14.285…%
        _, page = await get(app.http_port, "/report?since=1h")
    tables = Tables(page)
    percentages = re.findall(r"(\d+(?:\.\d+)?) ?%", page)
    assert percentages and all(re.fullmatch(r"\d+\.\d", p) for p in percentages), percentages
    for row in tables.table("models"):
        assert re.fullmatch(r"\d+\.\d%", row["error ratio"])
        assert re.fullmatch(r"\d+\.\d\d", row["p50 ms"]) and re.fullmatch(r"\d+\.\d\d", row["p99 ms"])
    totals = {r["measure"]: r["value"] for r in tables.table("totals")}
    assert re.fullmatch(r"\d+\.\d\d / \d+\.\d\d / \d+\.\d\d", totals["Latency p50 / p95 / p99 (ms)"])
    assert re.fullmatch(r"\d+\.\d\d", totals["Mean latency (ms)"])
    assert re.match(r"\d+\.\d\d over ", totals["Throughput, mean (req/s)"])
    assert re.match(r"\d+\.\d\d: ", totals["Throughput, peak minute (req/s)"])
    assert re.fullmatch(r"1 \(14\.3%\): .*", totals["Errors"]) and totals["Uptime"] == "100.0%"
    assert re.search(r'text-anchor="end">\d+\.\d\d ms</text>', page)  # the p99 plot's top value


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
