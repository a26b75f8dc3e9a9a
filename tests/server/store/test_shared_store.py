"""Vigil servers sharing one store (a SQLite file; a PostgreSQL database): feedback on either server, after a
restart, an outage of PostgreSQL under load, and erasure through the API and the command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.conftest import running_app
from tests.postgres import PostgresCluster
from tests.server.test_quality import metrics_page, oip_request, quality_frame, rows, sample
from vigil.clients import AsyncClient, FeedbackReceipt, InvalidInput, PredictionNotFound, Unavailable, VigilError
from vigil.protos.inference import grpc_service_pb2_grpc
from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.settings import AlertSettings, AuditSettings, QualitySettings, StoreSettings

T = TypeVar("T")
VIGIL = shutil.which("vigil", path=str(Path(sys.executable).parent)) or "vigil"


def shared(url: str, **overrides: object) -> StoreSettings:
    return StoreSettings.model_validate({"url": url, "refresh_seconds": 0.2, **overrides})


async def eventually(attempt: Callable[[], Awaitable[T]], seconds: float = 15.0) -> T:
    """The first answer of `attempt` that is not PredictionNotFound: a prediction made on another server reaches
    the store within about a second."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await attempt()
        except PredictionNotFound:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def settled(client: AsyncClient, check: Callable[[telemetry_pb2.QualityTelemetry], bool],
                  seconds: float = 15.0) -> telemetry_pb2.QualityTelemetry:
    deadline = time.monotonic() + seconds
    while True:
        quality = await quality_frame(client, "classifier")
        if check(quality) or time.monotonic() > deadline:
            return quality
        await asyncio.sleep(0.1)


async def test_feedback_on_one_server_counts_on_both(model_repo: Path, store_url: str) -> None:
    async with running_app(model_repo, store=shared(store_url)) as one, \
            running_app(model_repo, store=shared(store_url)) as other, \
            AsyncClient(f"127.0.0.1:{one.grpc_port}") as first, AsyncClient(f"127.0.0.1:{other.grpc_port}") as second:
        a = await first.predict("classifier", rows("red", "green"))
        b = await first.predict("classifier", rows("blue"))
        await second.predict("classifier", rows("green"))  # predicted, never labelled
        receipt = await eventually(lambda: second.feedback(a.request_id, ["red", "blue"]))
        assert receipt.predicted_labels == ["red", "green"] and not receipt.replaced
        await eventually(lambda: second.feedback(b.request_id, "blue"))
        here = await quality_frame(second, "classifier")
        there = await settled(first, lambda q: q.feedback_total == 3 and q.windows[0].predictions == 4)
        for quality in (here, there):
            assert quality.feedback_total == 3 and quality.recent.rows == 3
            assert quality.recent.accuracy == pytest.approx(2 / 3)
            hour = quality.windows[0]
            assert hour.name == "hour" and hour.predictions == 4 and hour.coverage == pytest.approx(3 / 4)
        page = await metrics_page(one.http_port)
        report = await report_json(one.http_port)
    assert sample(page, "vigil_accuracy", model="classifier", window="count") == pytest.approx(2 / 3)
    # the report of the server that made the predictions counts the labels the other one received
    [version] = next(m for m in report["models"] if m["model"] == "classifier")["versions"]
    assert version["accuracy_source"] == "prediction log"
    assert (version["feedback_rows"], version["correct_rows"], version["logged_rows"]) == (3, 2, 4)
    assert sample(page, "vigil_label_coverage", model="classifier", window="day") == pytest.approx(3 / 4)


async def report_json(port: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}/report.json?since=1h") as response:
        data: dict[str, Any] = await response.json()
        return data


async def test_a_prediction_takes_feedback_after_a_restart(model_repo: Path, store_url: str) -> None:
    async with running_app(model_repo, store=shared(store_url)) as before, \
            AsyncClient(f"127.0.0.1:{before.grpc_port}") as client:
        prediction = await client.predict("classifier", rows("green"))
    # the server stopped: what it had queued was written on the way out
    async with running_app(model_repo, store=shared(store_url)) as after, \
            AsyncClient(f"127.0.0.1:{after.grpc_port}") as client:
        receipt = await client.feedback(prediction.request_id, "green")
        quality = await quality_frame(client, "classifier")
    assert isinstance(receipt, FeedbackReceipt) and receipt.predicted_labels == ["green"]
    assert quality.feedback_total == 1 and quality.recent.accuracy == 1.0


async def test_serving_goes_on_while_postgresql_is_down(model_repo: Path, postgres: PostgresCluster,
                                                        postgres_url: str) -> None:
    store = shared(postgres_url, max_queued=20, connect_timeout_seconds=1)
    alerts = AlertSettings(interval_seconds=0.2)
    async with running_app(model_repo, store=store, alerts=alerts) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        answered = 0

        async def load(seconds: float) -> None:
            nonlocal answered
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await asyncio.gather(*(client.predict("classifier", rows("red")) for _ in range(4)))
                answered += 4

        await load(0.5)
        earlier = await client.predict("classifier", rows("red"))
        postgres.stop()
        try:
            await load(3.0)  # well over 20 predictions while the store is down: every call still answers
            with pytest.raises(Unavailable, match="the prediction log cannot be reached right now"):
                await client.feedback(earlier.request_id, "red")
        finally:
            postgres.start()
        page = await metrics_page(app.http_port)
        assert sample_total(page, "vigil_store_dropped_rows_total") > 0
        firing = await eventually_firing(app.http_port, "VigilStoreDroppingPredictions")
        assert firing
        # writes resume: once the load's last predictions are folded in (every 0.5 s) and the queue has drained,
        # a prediction made now is logged and takes feedback
        await asyncio.sleep(1.0)
        await drained(app.http_port)
        after = await client.predict("classifier", rows("blue"))
        receipt = await eventually(lambda: client.feedback(after.request_id, "blue"), seconds=30)
        assert receipt.predicted_labels == ["blue"]
    assert answered >= 40


async def drained(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while sample_total(await metrics_page(port), "vigil_store_queue") > 0:
        assert time.monotonic() < deadline, "the store's write queue did not drain"
        await asyncio.sleep(0.2)


def sample_total(page: str, name: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} on /metrics")


async def eventually_firing(port: int, alert: str, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        page = await metrics_page(port)
        for line in page.splitlines():
            if line.startswith("vigil_alerts_firing{") and f'alertname="{alert}"' in line and \
                    float(line.rsplit(" ", 1)[1]) > 0:
                return True
        await asyncio.sleep(0.2)
    return False


async def test_forget_erases_exactly_one_subject_and_audits_it(model_repo: Path, store_url: str,
                                                              tmp_path: Path) -> None:
    audit = AuditSettings(file=tmp_path / "audit.jsonl")
    quality = QualitySettings(subject_hash_key="test-secret")
    async with running_app(model_repo, store=shared(store_url), audit=audit, quality=quality) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        made = [await client.predict("classifier", rows(colour)) for colour in ("red", "green", "blue")]
        for prediction, subject in zip(made, ("patient-1", "patient-1", "patient-2"), strict=True):
            await client.feedback(prediction.request_id, "red", subject_id=subject)
        erased = await client.forget("patient-1")
        assert (erased.predictions, erased.outcomes) == (2, 2)
        with pytest.raises(PredictionNotFound):
            await client.feedback(made[0].request_id, "red")
        assert (await client.feedback(made[2].request_id, "blue")).replaced  # patient-2's rows stay
        quality_now = await quality_frame(client, "classifier")
        # the command line, from another process
        env = {**os.environ, "VIGIL_TARGET": f"127.0.0.1:{app.grpc_port}"}
        process = await asyncio.create_subprocess_exec(VIGIL, "forget", "--subject", "patient-2", env=env,
                                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    assert out.decode().strip() == "erased 1 prediction(s), 1 of them with outcomes"
    assert quality_now.feedback_total == 1 and quality_now.windows[0].predictions == 1
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    forgets = [line for line in lines if line["method"] == "Forget"]
    assert [(f["erased_predictions"], f["erased_outcomes"]) for f in forgets] == [(2, 2), (1, 1)]
    assert all(len(f["subject_hash"]) == 64 for f in forgets)
    assert "patient-1" not in (tmp_path / "audit.jsonl").read_text()


async def test_predictions_sent_with_a_subject_are_erased_with_it(model_repo: Path, store_url: str) -> None:
    async with running_app(model_repo, store=shared(store_url)) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        native = await client.predict("classifier", rows("red"), subject_id="patient-9")
        request = oip_request("green", "case-1")
        request.parameters["subject_id"].string_param = "patient-9"
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(client._channel)
        answer = await stub.ModelInfer(request)
        other = await client.predict("classifier", rows("blue"), subject_id="patient-10")
        with pytest.raises(InvalidInput, match="subject_id is longer than 256 bytes"):
            await client.predict("classifier", rows("blue"), subject_id="x" * 257)
        app.monitoring.quality.process()  # type: ignore[union-attr]  # the fold, now
        erased = await client.forget("patient-9")
        assert (erased.predictions, erased.outcomes) == (2, 0)  # neither had labels
        for gone in (native.request_id, answer.parameters["request_id"].string_param):
            with pytest.raises(PredictionNotFound):
                await client.feedback(gone, "red")
        assert not (await client.feedback(other.request_id, "blue")).replaced


async def test_two_processes_share_one_store(model_repo: Path, store_url: str, tmp_path: Path) -> None:
    """`vigil serve` in a process of its own makes the predictions; this process's server takes their feedback."""
    env = {**os.environ, "VIGIL_STORE__URL": store_url, "VIGIL_STORE__REFRESH_SECONDS": "0.2",
           "VIGIL_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        VIGIL, "serve", "--models", str(model_repo), "--host", "127.0.0.1", "--port", "0", "--http-port", "0",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path)
    try:
        target = await listening(process)
        async with AsyncClient(target) as there, running_app(model_repo, store=shared(store_url)) as app, \
                AsyncClient(f"127.0.0.1:{app.grpc_port}") as here:
            made = [await there.predict("classifier", rows(colour)) for colour in ("red", "green", "blue")]
            for prediction, truth in zip(made, ("red", "green", "red"), strict=True):
                await eventually(lambda p=prediction, t=truth: here.feedback(p.request_id, t))
            mine = await quality_frame(here, "classifier")
            theirs = await settled(there, lambda q: q.feedback_total == 3)
        for quality in (mine, theirs):
            assert quality.feedback_total == 3 and quality.recent.accuracy == pytest.approx(2 / 3)
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def listening(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    while line := (await asyncio.wait_for(process.stdout.readline(), 60)).decode():
        if match := re.search(r"gRPC listening on [\d.]+:(\d+)", line):
            target = f"127.0.0.1:{match.group(1)}"
            async with AsyncClient(target) as client:
                for _ in range(600):
                    with contextlib.suppress(VigilError):
                        if await client.health() == "SERVING":
                            return target
                    await asyncio.sleep(0.1)
    raise AssertionError("vigil serve did not come up")
