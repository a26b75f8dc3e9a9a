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

from clients import AsyncClient
from protos.vigil.v1 import inference_pb2_grpc
from tests.conftest import running_app
from tests.server.test_telemetry_stream import request
from tests.web.chromium import CHROMIUM, Browser

TOTAL = "document.querySelector('#models tr[data-model=\"breast_cancer\"] .total')?.textContent"
ACCURACY = "document.querySelector('#quality tr[data-model=\"classifier\"] .accuracy')?.textContent"
DRIFT = "document.querySelector('#quality tr[data-model=\"breast_cancer\"] .drift-cell')?.textContent"


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


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (make system-deps installs it)")
async def test_dashboard_page_shows_live_numbers(model_repo: Path, tmp_path: Path) -> None:
    async with running_app(model_repo) as app, Browser(height=900) as page, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        await page.goto(
            f"http://127.0.0.1:{app.http_port}/?interval_ms=200&models=breast_cancer,classifier,add,corrupt")
        before = int(await wait_for_value(page, TOTAL, lambda v: v.isdigit()))  # type: ignore[arg-type]
        for round_ in range(6):  # some traffic over a few frames, so the charts have a shape
            await asyncio.gather(*(stub.Predict(request(1 + i % 4)) for i in range(20 + 15 * round_)))
            await asyncio.sleep(0.25)
        after = int(await wait_for_value(page, TOTAL, lambda v: int(v) >= before + 195))  # type: ignore[arg-type]
        assert after == before + sum(20 + 15 * r for r in range(6))
        assert await page.evaluate("document.getElementById('state').textContent") == "SERVING"
        assert int(await page.evaluate("document.getElementById('frames').textContent")) >= 3
        assert "breast_cancer v1" in await page.evaluate("document.getElementById('throughput-legend').textContent")
        # quality: the classifier's accuracy after feedback (one of two rows right), and the bundled model's drift
        async with AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
            prediction = await client.predict("classifier", np.asarray([[1, 0, 0], [0, 1, 0]], np.float32))
            await client.feedback(prediction.request_id, ["red", "blue"])
        assert app.monitoring is not None and app.monitoring.quality is not None
        app.monitoring.quality.process()
        app.monitoring.quality.check_drift()
        assert await wait_for_value(page, ACCURACY, lambda v: v == "50.0 %")
        assert await wait_for_value(page, DRIFT, lambda v: v in ("no drift", "possible drift", "drift"))
        mix = await page.evaluate("document.querySelector('#quality tr[data-model=\"classifier\"] .mix-cell')"
                                  "?.textContent")
        assert "red" in mix and "green" in mix
        out = Path(os.environ.get("VIGIL_SCREENSHOT_DIR", tmp_path))
        await page.screenshot(out / "dashboard.png")
    assert (out / "dashboard.png").stat().st_size > 10_000
