"""The web dashboard in headless Chromium, and its server-sent-events feed."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from tests.conftest import running_app
from tests.server.web.chromium import CHROMIUM, Browser
from tests.telemetry.stream.test_telemetry_stream import request
from vigil.clients import AsyncClient
from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.settings import DEFAULT_ALERT_RULES, AlertRuleSettings, AlertSettings

TOTAL = "document.querySelector('#models tr[data-model=\"breast_cancer\"] .total')?.textContent"
CARD = "document.querySelector('#quality .card[data-model=\"{model}\"] {selector}')?.textContent"
RED = CARD.format(model="classifier", selector=".mix tr[data-label=\"red\"] .count")
ACCURACY = CARD.format(model="classifier", selector=".accuracy")
EXPECTED = CARD.format(model="classifier", selector=".expected")
DRIFT = CARD.format(model="breast_cancer", selector=".drift-status")
TOP_FEATURE = CARD.format(model="breast_cancer", selector=".features tr td")
ALERTS = "[...document.querySelectorAll('#alerts li[data-alert]')].map((li) => li.className + ' ' + li.dataset.alert)"
ONE_HOT = {"red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0, 1]}
SHIFTED = 3
"""Column of "mean area", scaled up in the page test's traffic so that one input feature drifts."""
RULES = AlertSettings(rules=[
    *DEFAULT_ALERT_RULES,
    AlertRuleSettings(name="ClassifierAccuracy", signal="accuracy", op="<", threshold=0.9, severity="critical",
                      summary="{model} v{version}: accuracy {value} over the recent labelled rows",
                      params={"window": "count"}),
    AlertRuleSettings(name="FeatureDrift", signal="drift_status", op=">=", threshold=2, severity="warning",
                      summary="{model} v{version}: input features drift from the reference", params={"test": "psi"})])
"""The shipped rules, and two that fire at once (the shipped ones wait minutes)."""


async def wait_for_value(page: Browser, expression: str, accept: object, timeout: float = 15) -> object:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await page.evaluate(expression)
        if value is not None and accept(value):  # type: ignore[operator]
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{expression} was {value!r} after {timeout} s")


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


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (make system-deps installs it)")
async def test_dashboard_page_shows_live_numbers(model_repo: Path, tmp_path: Path) -> None:
    async with running_app(model_repo, alerts=RULES) as app, Browser(height=1380) as page, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        assert app.monitoring is not None and app.monitoring.quality is not None and app.monitoring.alerts
        stub = inference_pb2_grpc.InferenceStub(channel)
        await page.goto(
            f"http://127.0.0.1:{app.http_port}/?interval_ms=200&models=breast_cancer,classifier,add,corrupt")
        before = int(await wait_for_value(page, TOTAL, lambda v: v.isdigit()))  # type: ignore[arg-type]
        labels = ["red"] * 5 + ["green"] * 3 + ["blue"] * 2
        predictions = []
        for round_ in range(6):  # some traffic over a few frames, so the charts have a shape
            await asyncio.gather(*(stub.Predict(patients(1 + i % 4, seed=100 * round_ + i))
                                   for i in range(20 + 15 * round_)))
            predictions.append(await client.predict("classifier", np.asarray([ONE_HOT[c] for c in labels],
                                                                             np.float32)))
            await asyncio.sleep(0.25)
        after = int(await wait_for_value(page, TOTAL, lambda v: int(v) >= before + 195))  # type: ignore[arg-type]
        assert after == before + sum(20 + 15 * r for r in range(6))
        # the report panel: every call that named a model in the last hour
        await page.evaluate("document.getElementById('report-since').value = '1h'; "
                            "document.getElementById('report-refresh').click()")
        assert await wait_for_value(page, "document.getElementById('report-requests').textContent",
                                    lambda v: v == str(after + len(predictions)))
        assert await page.evaluate("document.getElementById('state').textContent") == "SERVING"
        assert int(await page.evaluate("document.getElementById('frames').textContent")) >= 3
        assert "breast_cancer v1" in await page.evaluate("document.getElementById('throughput-legend').textContent")
        # the classifier's class mix: every red row counted
        assert await wait_for_value(page, RED, lambda v: v == "30")
        shares = await page.evaluate("[...document.querySelectorAll('#quality .card[data-model=\"classifier\"] "
                                     ".mix tr')].map((tr) => tr.dataset.label + ' ' + tr.querySelector('.share')"
                                     ".textContent)")
        assert shares == ["red 50%", "green 30%", "blue 20%"]
        confidence = await page.evaluate(CARD.format(model="classifier", selector=".confidence"))
        assert 1 / 3 < float(confidence) < 1
        assert await page.evaluate(ACCURACY) == "–"
        # feedback: the last batch's blue rows were truly green (8 of 10 right), then a drift check and the rules
        await client.feedback(predictions[-1].request_id, labels[:-2] + ["green", "green"])
        app.monitoring.quality.process()
        app.monitoring.quality.check_drift()
        app.monitoring.alerts.evaluate()
        assert await wait_for_value(page, ACCURACY, lambda v: v == "80.0 %")
        assert (await page.evaluate(EXPECTED)).endswith(" %")
        assert await wait_for_value(page, DRIFT, lambda v: v == "drift")
        assert await page.evaluate(TOP_FEATURE) == "mean area"
        assert await wait_for_value(page, ALERTS, lambda v: v == ["critical ClassifierAccuracy",
                                                                  "warning FeatureDrift"])
        assert await page.evaluate("document.getElementById('alert-count').textContent") == "(2)"
        await asyncio.sleep(1)  # a few more frames for the charts
        out = Path(os.environ.get("VIGIL_SCREENSHOT_DIR", tmp_path))
        await page.screenshot(out / "dashboard.png")
    assert (out / "dashboard.png").stat().st_size > 10_000
