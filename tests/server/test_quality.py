"""Prediction monitoring and ground-truth feedback through a real server: the Feedback RPCs, their errors, and
what the Telemetry stream and /metrics report."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest

from tests.conftest import running_app
from vigil.clients import AsyncClient, InvalidInput, PredictionNotFound, Unimplemented
from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.inference import grpc_service_pb2_grpc
from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.settings import QualitySettings, StoreSettings
from vigil.telemetry.quality.outcomes import subject_hash

ONE_HOT = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}
"""Inputs the test classifier predicts as each label."""


def rows(*labels: str) -> np.ndarray:
    return np.asarray([ONE_HOT[label] for label in labels], np.float32)


async def metrics_page(port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        return await response.text()


def sample(page: str, name: str, **labels: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} on /metrics")


async def quality_frame(client: AsyncClient, model: str) -> telemetry_pb2.QualityTelemetry:
    async for frame in client.telemetry(interval_ms=100, models=[model], sections=["models", "quality"]):
        return next(m.quality for m in frame.models if m.model == model)
    raise AssertionError("the stream ended")


async def test_feedback_gives_exact_accuracy_confusion_and_class_counts(model_repo: Path) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        first = await client.predict("classifier", rows("red", "green", "blue"))
        second = await client.predict("classifier", rows("red"))
        third = await client.predict("classifier", rows("blue", "blue"))
        assert first.labels == ["red", "green", "blue"]
        receipt = await client.feedback(first.request_id, ["red", "green", "green"])  # the last row was wrong
        assert receipt.predicted_labels == ["red", "green", "blue"] and receipt.model_name == "classifier"
        assert not receipt.replaced
        await client.feedback(second.request_id, "blue")  # wrong
        await client.feedback(third.request_id, ["blue", "blue"])
        quality = await quality_frame(client, "classifier")
        page = await metrics_page(app.http_port)
    # 6 labelled rows, 4 right. Rows (true → predicted): red→red, green→green, green→blue, blue→red, blue→blue ×2.
    assert quality.recent.rows == quality.timed.rows == 6 == quality.feedback_total
    assert quality.recent.accuracy == pytest.approx(4 / 6)
    assert list(quality.confusion.labels) == ["red", "green", "blue"]
    assert list(quality.confusion.counts) == [1, 0, 0, 0, 1, 1, 1, 0, 2]
    per_class = {c.label: c for c in quality.recent.classes}
    assert per_class["red"].precision == pytest.approx(1 / 2) and per_class["red"].recall == 1.0
    assert per_class["green"].precision == 1.0 and per_class["green"].recall == pytest.approx(1 / 2)
    assert per_class["blue"].precision == pytest.approx(2 / 3) and per_class["blue"].recall == pytest.approx(2 / 3)
    assert per_class["blue"].support == 3 and per_class["blue"].f1 == pytest.approx(2 / 3)
    assert dict(quality.predictions_total) == {"red": 2, "green": 1, "blue": 3}
    assert quality.expected_accuracy_rows == 6 and 0 < quality.expected_accuracy < 1
    assert not quality.drift.has_reference  # the test classifier ships no profile
    assert sample(page, "vigil_accuracy", model="classifier", window="count") == pytest.approx(4 / 6)
    assert sample(page, "vigil_feedback_total", model="classifier") == 6
    assert sample(page, "vigil_predictions_total", model="classifier", **{"class": "blue"}) == 3
    assert sample(page, "vigil_prediction_confidence_count", model="classifier") == 6


async def test_feedback_errors_name_the_problem(model_repo: Path) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        prediction = await client.predict("classifier", rows("red", "green"))
        with pytest.raises(PredictionNotFound, match="no logged prediction has the id 'nope'"):
            await client.feedback("nope", "red")
        with pytest.raises(InvalidInput, match="one label per row, got 1"):
            await client.feedback(prediction.request_id, "red")
        with pytest.raises(InvalidInput, match=r"labels \['purple'\] are not labels of classifier"):
            await client.feedback(prediction.request_id, ["red", "purple"])
        with pytest.raises(InvalidInput, match="request_id is empty"):
            await client.feedback("", "red")
        with pytest.raises(InvalidInput, match="has no labels"):
            await client.feedback(prediction.request_id, [])
        other = await client.predict("add", {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)})
        with pytest.raises(PredictionNotFound):  # not a classifier: its predictions are not kept
            await client.feedback(other.request_id, "red")
        # a correct item still works after the refusals, and a second one replaces it, counted once
        assert not (await client.feedback(prediction.request_id, ["red", "red"])).replaced
        assert (await client.feedback(prediction.request_id, ["red", "green"])).replaced
        quality = await quality_frame(client, "classifier")
    assert quality.feedback_total == 2 and quality.recent.rows == 2 and quality.recent.accuracy == 1.0


async def test_batch_feedback_answers_each_item(model_repo: Path) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        prediction = await client.predict("classifier", rows("blue"))
        results = await client.batch_feedback([(prediction.request_id, "blue"), ("unknown", "red"),
                                               (prediction.request_id, ["red", "red"])])
    assert not isinstance(results[0], Exception) and results[0].predicted_labels == ["blue"]
    assert isinstance(results[1], PredictionNotFound) and isinstance(results[2], InvalidInput)


async def test_feedback_past_the_retention_period_says_so(model_repo: Path) -> None:
    store = StoreSettings(url="memory", retention_days=0.3 / 86_400)
    async with running_app(model_repo, store=store) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        prediction = await client.predict("classifier", rows("red"))
        await asyncio.sleep(0.6)
        outcomes = app.monitoring.outcomes  # type: ignore[union-attr]
        assert outcomes is not None
        outcomes.monitor.process()
        assert outcomes.log.flush(5)
        assert outcomes.store.purge() == 1  # the hourly purge, now
        with pytest.raises(PredictionNotFound, match=r"was made on \d{4}-\d\d-\d\d, past the 0.3 s retention "
                                                     "period"):
            await client.feedback(prediction.request_id, "red")


async def test_open_inference_protocol_request_id_takes_feedback(model_repo: Path) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        request = oip.ModelInferRequest(model_name="classifier", id="case-17")
        request.inputs.add(name="features", datatype="FP32", shape=[1, 3])
        request.raw_input_contents.append(rows("green").tobytes())
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(client._channel)
        answer = await stub.ModelInfer(request)
        assert answer.id == "case-17"
        receipt = await client.feedback("case-17", "green")
    # the prediction is kept under the server's own request id, which the receipt names
    assert receipt.predicted_labels == ["green"]
    assert receipt.request_id == answer.parameters["request_id"].string_param != "case-17"


def oip_request(colour: str, request_id: str) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="classifier", id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(rows(colour).tobytes())
    return request


async def test_a_reused_client_id_never_replaces_a_prediction(model_repo: Path) -> None:
    """A second caller reusing an id (even one the server assigned to someone else) must not have the first
    caller's feedback scored against its prediction."""
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(client._channel)
        first = await stub.ModelInfer(oip_request("green", "case-9"))
        second = await stub.ModelInfer(oip_request("blue", "case-9"))
        first_id = first.parameters["request_id"].string_param
        second_id = second.parameters["request_id"].string_param
        assert first.id == second.id == "case-9" and first_id != second_id
        # the shared id names neither prediction now; the server's ids still name each
        with pytest.raises(InvalidInput, match="2 predictions were sent with the id 'case-9'"):
            await client.feedback("case-9", "green")
        assert (await client.feedback(first_id, "green")).predicted_labels == ["green"]
        assert (await client.feedback(second_id, "green")).predicted_labels == ["blue"]
        # a request sent with another caller's server-assigned id takes nothing from it
        native = await client.predict("classifier", rows("red"))
        await stub.ModelInfer(oip_request("blue", native.request_id))
        receipt = await client.feedback(native.request_id, "red")
        assert receipt.predicted_labels == ["red"] and receipt.request_id == native.request_id


@pytest.mark.parametrize("bad", ["x" * 129, "two words", "tab\there", "naïve", "x" * (1 << 20)])
async def test_a_client_id_is_bounded_and_printable(model_repo: Path, bad: str) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(client._channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(oip_request("red", bad))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"id must be at most 128 printable ASCII characters without spaces (got {len(bad)} characters)" == \
        info.value.details()


async def test_a_client_id_is_written_to_no_log(model_repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                ) -> None:
    audit = tmp_path / "audit.jsonl"
    caplog.set_level(logging.DEBUG)
    async with running_app(model_repo, audit={"file": audit}) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(client._channel)
        answer = await stub.ModelInfer(oip_request("red", "Jane.Doe-1970-01-01"))
        await client.feedback("Jane.Doe-1970-01-01", "red")
    lines = audit.read_text()
    assert answer.parameters["request_id"].string_param in lines  # the server's id is what the audit keeps
    assert "Jane.Doe" not in lines
    assert all("Jane.Doe" not in (r.getMessage() + repr(getattr(r, "fields", ""))) for r in caplog.records)


async def test_subject_ids_are_logged_only_as_a_keyed_hash(model_repo: Path, caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    quality = QualitySettings(subject_hash_key="test-secret")
    async with running_app(model_repo, quality=quality) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        prediction = await client.predict("classifier", rows("red"))
        with caplog.at_level(logging.DEBUG, logger="vigil.server.inference.outcomes"):
            await client.feedback(prediction.request_id, "red", subject_id="patient-0042")
    records = [r for r in caplog.records if r.getMessage() == "feedback received"]
    assert len(records) == 1
    fields = records[0].fields  # type: ignore[attr-defined]
    assert fields["subject_hash"] == subject_hash(b"test-secret", "patient-0042") != "patient-0042"
    assert all("patient-0042" not in (r.getMessage() + repr(getattr(r, "fields", ""))) for r in caplog.records)


async def test_feedback_is_unimplemented_when_quality_monitoring_is_off(model_repo: Path) -> None:
    async with running_app(model_repo, quality=QualitySettings(enabled=False)) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        prediction = await client.predict("classifier", rows("red"))
        with pytest.raises(Unimplemented, match="quality monitoring is turned off"):
            await client.feedback(prediction.request_id, "red")


async def test_feedback_is_not_logged_at_info(model_repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A per-call event: at INFO, a day of feedback would drown everything else in the log."""
    caplog.set_level(logging.INFO)
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        caplog.clear()  # what starting the server logs
        for _ in range(5):
            prediction = await client.predict("classifier", rows("red"))
            await client.feedback(prediction.request_id, "red")
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []
