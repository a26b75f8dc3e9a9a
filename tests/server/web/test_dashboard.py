"""The web dashboard in headless Chromium (through Playwright), and its server-sent-events feed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from playwright.async_api import Browser, Page, expect
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_breast_cancer

from tests.conftest import running_app
from tests.server.web.browser import launch
from tests.telemetry.stream.test_telemetry_stream import request
from vigil.clients import AsyncClient
from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.settings import DEFAULT_ALERT_RULES, AlertRuleSettings, AlertSettings
from vigil.server.settings.groups import QualitySettings

WAIT_MS = 15_000
"""How long a check waits for the page to show what it expects."""
ONE_HOT = {"red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0, 1]}
SHIFTED = 3
"""Column of "mean area", scaled up in the page test's traffic so that one input feature drifts."""
ACCURACY_RULE = AlertRuleSettings(name="ClassifierAccuracy", signal="accuracy", op="<", threshold=0.9,
                                  severity="critical", params={"window": "count"},
                                  summary="{model} v{version}: accuracy {value} over the recent labelled rows")
RULES = AlertSettings(rules=[
    *DEFAULT_ALERT_RULES, ACCURACY_RULE,
    AlertRuleSettings(name="FeatureDrift", signal="drift_status", op=">=", threshold=2, severity="warning",
                      summary="{model} v{version}: input features drift from the reference", params={"test": "psi"})])
"""The shipped rules, and two that fire at once (the shipped ones wait minutes)."""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch() as chromium:
        yield chromium


TOTAL = '#models tr[data-model="{model}"] .total'
"""A model's request total in the models table."""
CARD = '#quality .card[data-model="{model}"]'
"""A model's card in the quality panel."""


async def wait_for_number(page: Page, selector: str, at_least: float = 0) -> float:
    """Waits until the element at `selector` shows a number of at least `at_least` (the page redraws its tables
    on every frame, so the element is looked up afresh each time); returns the number."""
    shown = await page.wait_for_function(
        """([selector, least]) => {
             const text = document.querySelector(selector)?.textContent?.trim();
             // the text, not the number: a 0 would not end the wait
             return text && /^[0-9.]+$/.test(text) && Number(text) >= least ? text : null;
           }""", arg=[selector, at_least], timeout=WAIT_MS)
    return float(await shown.json_value())


async def test_event_stream_mirrors_the_grpc_frames_as_json(model_repo: Path) -> None:
    async with running_app(model_repo) as app, aiohttp.ClientSession() as http, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        url = f"http://127.0.0.1:{app.http_port}/telemetry/stream?interval_ms=100&models=breast_cancer"
        async with http.get(url) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            await inference_pb2_grpc.InferenceStub(channel).Predict(request(3))
            frames = []
            async for line in response.content:
                if line.startswith(b"data: "):
                    frames.append(json.loads(line[6:]))
                    if int(frames[-1]["models"][0]["requests_total"]) >= 1:
                        break
        async with http.get(f"http://127.0.0.1:{app.http_port}/telemetry/stream?interval_ms=5") as bad:
            assert bad.status == 400 and "interval_ms" in await bad.text()
    model = frames[-1]["models"][0]
    assert model["model"] == "breast_cancer" and int(model["rows_total"]) >= 3
    assert [int(f["sequence"]) for f in frames] == list(range(1, len(frames) + 1))
    quality = model["quality"]  # proto field names, as the page reads them
    assert "predictions_total" in quality and quality["drift"]["has_reference"] is True


def patients(n: int, seed: int) -> pb.PredictRequest:
    """`n` rows of the breast-cancer data set, with mean area half as large again."""
    data = load_breast_cancer().data.astype(np.float32)
    rows = data[np.random.default_rng(seed).integers(0, len(data), n)]
    rows[:, SHIFTED] *= 1.5
    return pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", rows)])


@pytest.mark.timeout(60)
async def test_dashboard_page_shows_live_numbers(model_repo: Path, tmp_path: Path, browser: Browser) -> None:
    async with running_app(model_repo, alerts=RULES) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        assert app.monitoring is not None and app.monitoring.quality is not None and app.monitoring.alerts
        stub = inference_pb2_grpc.InferenceStub(channel)
        page = await browser.new_page(viewport={"width": 1280, "height": 1380})
        errors: list[Exception] = []
        page.on("pageerror", lambda error: errors.append(error))
        await page.goto(
            f"http://127.0.0.1:{app.http_port}/?interval_ms=200&models=breast_cancer,classifier,add,corrupt")
        before = int(await wait_for_number(page, TOTAL.format(model="breast_cancer")))
        labels = ["red"] * 5 + ["green"] * 3 + ["blue"] * 2
        predictions = []
        for round_ in range(6):  # some traffic over a few frames, so the charts have a shape
            await asyncio.gather(*(stub.Predict(patients(1 + i % 4, seed=100 * round_ + i))
                                   for i in range(20 + 15 * round_)))
            predictions.append(await client.predict("classifier", np.asarray([ONE_HOT[c] for c in labels],
                                                                             np.float32)))
            await asyncio.sleep(0.25)
        after = before + sum(20 + 15 * r for r in range(6))
        await expect(page.locator(TOTAL.format(model="breast_cancer"))).to_have_text(str(after), timeout=WAIT_MS)
        # the report panel: every call that named a model in the last hour
        await page.select_option("#report-since", "1h")
        await page.click("#report-refresh")
        await expect(page.locator("#report-requests")).to_have_text(str(after + len(predictions)), timeout=WAIT_MS)
        await expect(page.locator("#state")).to_have_text("SERVING")
        assert await wait_for_number(page, "#frames", 3) >= 3
        await expect(page.locator("#throughput-legend")).to_contain_text("breast_cancer v1")
        # the classifier's class mix: every red row counted
        classifier = page.locator(CARD.format(model="classifier"))
        await expect(classifier.locator('.mix tr[data-label="red"] .count')).to_have_text("30", timeout=WAIT_MS)
        await expect(classifier.locator(".mix tr td:first-child")).to_have_text(["red", "green", "blue"])
        await expect(classifier.locator(".mix tr .share")).to_have_text(["50%", "30%", "20%"])
        confidence = await classifier.locator(".confidence").text_content()
        assert 1 / 3 < float(confidence or "nan") < 1
        await expect(classifier.locator(".accuracy")).to_have_text("–")
        # feedback: the last batch's blue rows were truly green (8 of 10 right), then a drift check and the rules
        await client.feedback(predictions[-1].request_id, labels[:-2] + ["green", "green"])
        app.monitoring.quality.process()
        app.monitoring.quality.check_drift()
        app.monitoring.alerts.evaluate()
        await expect(classifier.locator(".accuracy")).to_have_text("80.0%", timeout=WAIT_MS)
        await expect(classifier.locator(".expected")).to_have_text(re.compile(r"^\d+\.\d%$"))
        patients_card = page.locator(CARD.format(model="breast_cancer"))
        await expect(patients_card.locator(".drift-status")).to_have_text("drift", timeout=WAIT_MS)
        await expect(patients_card.locator(".features tr td").first).to_have_text("mean area")
        alerts = page.locator("#alerts li[data-alert]")
        await expect(alerts).to_have_count(2, timeout=WAIT_MS)
        for item, (severity, name) in zip(await alerts.all(), [("critical", "ClassifierAccuracy"),
                                                               ("warning", "FeatureDrift")], strict=True):
            await expect(item).to_have_attribute("data-alert", name)
            await expect(item).to_have_class(re.compile(rf"\b{severity}\b"))
        await expect(page.locator("#alert-count")).to_have_text("(2)")
        await asyncio.sleep(1)  # a few more frames for the charts
        out = Path(os.environ.get("VIGIL_SCREENSHOT_DIR", tmp_path))
        await page.screenshot(path=out / "dashboard.png")
        assert errors == []
    assert (out / "dashboard.png").stat().st_size > 10_000


async def metric_total(http: aiohttp.ClientSession, port: int, name: str, **labels: str) -> float:
    """The sum of the `name` samples on /metrics whose labels include `labels`."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


async def stream_accuracy(client: AsyncClient, model: str) -> float:
    """The accuracy over the recent labelled rows in the next frame of the gRPC Telemetry stream."""
    async for frame in client.telemetry(interval_ms=100, models=[model]):
        return frame.models[0].quality.recent.accuracy
    raise AssertionError("the Telemetry stream ended without a frame")


def percent(text: str | None) -> float:
    """The number in "70.0 %" or "70.0%"."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*%\s*", text or "")
    assert match, f"{text!r} is not a percentage"
    return float(match[1])


@pytest.mark.timeout(60)
async def test_a_person_watches_an_alert_fire_and_resolve_then_opens_the_report(model_repo: Path,
                                                                                browser: Browser) -> None:
    """What an operator does: open the dashboard, read the numbers (the same as the server's own), watch an alert
    fire when the classifier's labelled rows go wrong and resolve when they are right again, then open the full
    report from the page."""
    # The accuracy rule over the 10 most recent labelled rows, evaluated every 0.2 s; feedback folded in at once.
    alerts = AlertSettings(interval_seconds=0.2, rules=[ACCURACY_RULE])
    quality = QualitySettings(interval_seconds=0.1, accuracy_window_rows=10)
    async with running_app(model_repo, alerts=alerts, quality=quality) as app, aiohttp.ClientSession() as http, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        context = await browser.new_context(viewport={"width": 1280, "height": 1200})
        page = await context.new_page()
        errors: list[Exception] = []
        page.on("pageerror", lambda error: errors.append(error))
        await page.goto(f"http://127.0.0.1:{app.http_port}/?interval_ms=200&models=classifier")
        await wait_for_number(page, "#frames", 2)
        await expect(page.locator("#state")).to_have_text("SERVING", timeout=WAIT_MS)
        requests = page.locator(TOTAL.format(model="classifier"))
        await expect(requests).to_have_text("0", timeout=WAIT_MS)
        await expect(page.locator("#alerts li[data-alert]")).to_have_count(0)

        # Traffic: ten red rows first, a few calls between, ten red rows last; every call is counted on the page.
        red = np.asarray([ONE_HOT["red"]] * 10, np.float32)
        first = await client.predict("classifier", red)
        for n in (1, 2, 3):
            await client.predict("classifier", red[:n])
        last = await client.predict("classifier", red)
        calls = 5
        await expect(requests).to_have_text(str(calls), timeout=WAIT_MS)
        assert await metric_total(http, app.http_port, "vigil_requests_total", model="classifier") == calls

        # Three of the first call's ten rows were truly blue: accuracy 70 % over the last 10 labelled rows, and
        # the rule (accuracy < 90 %) fires.
        await client.feedback(first.request_id, ["red"] * 7 + ["blue"] * 3)
        calls += 1
        classifier = page.locator(CARD.format(model="classifier"))
        accuracy = classifier.locator(".accuracy")
        await expect(accuracy).to_have_text(re.compile(r"^\s*70\.0\s*%\s*$"), timeout=WAIT_MS)
        assert percent(await accuracy.text_content()) == round(100 * await stream_accuracy(client, "classifier"), 1)
        alert = page.locator('#alerts li[data-alert="ClassifierAccuracy"]')
        await expect(alert).to_be_visible(timeout=WAIT_MS)
        await expect(alert).to_have_class(re.compile(r"\bcritical\b"))
        await expect(alert).to_contain_text("classifier")
        await expect(alert).to_contain_text("70.0%")
        await expect(page.locator("#alert-count")).to_have_text("(1)")
        events = page.locator("#events li").filter(has_text="ClassifierAccuracy")
        await expect(events.filter(has_text=re.compile("fired", re.I)).first).to_be_visible(timeout=WAIT_MS)
        # The alert line names the model and version once, and its summary does not repeat them.
        await expect(alert.locator(".what")).not_to_contain_text("classifier v1")
        await expect(alert.locator(".value")).to_have_text("70.0%")

        # Someone opening the page now sees the firing alert among the events at once, and charts with a time axis
        # that start with the last minutes' history (served here from a stand-in report: this server is seconds old).
        late = await context.new_page()
        late.on("pageerror", lambda error: errors.append(error))
        now = time.time()
        history = {"timeline": {"step_seconds": 60, "points": [
            {"start_unix": now - 300 + 60 * i, "requests": 600, "errors": 0, "p99_ms": 5.0} for i in range(3)]},
            "uptime": {"observed_from_unix": now - 3600}}

        async def stand_in(route: Any) -> None:
            await route.fulfill(json=history)

        await late.route(lambda url: "report.json" in url and "since=10m" in url, stand_in)
        await late.goto(f"http://127.0.0.1:{app.http_port}/?interval_ms=200&models=classifier")
        await expect(late.locator("#events li").filter(has_text="ALERT_FIRING").filter(
            has_text="ClassifierAccuracy").first).to_be_visible(timeout=WAIT_MS)
        seeded = late.locator("#throughput-legend span").filter(has_text="all models")
        await expect(seeded).to_have_attribute("data-first", re.compile(r"^\d+$"), timeout=WAIT_MS)
        first = int(await seeded.get_attribute("data-first") or 0)
        assert first / 1000 < now - 200, "the chart did not start with the history"  # 4.5 minutes ago
        ticks = await late.locator("#throughput").get_attribute("data-ticks")
        assert ticks and re.fullmatch(r"(\d\d:\d\d ?)+", ticks.strip()), ticks
        await late.close()

        # The last call's rows were all right: the 10 most recent labelled rows are all correct and it resolves.
        await client.feedback(last.request_id, ["red"] * 10)
        calls += 1
        await expect(accuracy).to_have_text(re.compile(r"^\s*100\.0\s*%\s*$"), timeout=WAIT_MS)
        assert percent(await accuracy.text_content()) == round(100 * await stream_accuracy(client, "classifier"), 1)
        await expect(alert).to_have_count(0, timeout=WAIT_MS)
        await expect(page.locator("#alerts li[data-alert]")).to_have_count(0)
        await expect(page.locator("#alert-count")).to_have_text("")
        await expect(events.filter(has_text=re.compile("resolved", re.I)).first).to_be_visible(timeout=WAIT_MS)
        await expect(events.filter(has_text=re.compile("fired", re.I)).first).to_be_visible()

        await expect(requests).to_have_text(str(calls), timeout=WAIT_MS)
        assert await metric_total(http, app.http_port, "vigil_requests_total", model="classifier") == calls

        # The full report opens in a new tab, over the period chosen on the page.
        async with context.expect_page(timeout=WAIT_MS) as opened:
            await page.click("#report-link")
        report = await opened.value
        await report.wait_for_load_state()
        assert re.search(r"/report\?since=\w+", report.url), report.url
        row = report.locator("table.models tr[data-model='classifier']")
        await expect(row.locator("td").first).to_have_text("classifier")
        await expect(row.locator("td.requests")).to_have_text(str(calls))
        await expect(report.locator("table.alerts")).to_contain_text("ClassifierAccuracy")
        await context.close()
        assert errors == []
