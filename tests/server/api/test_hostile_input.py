"""What an outside probe of the server found: long versions and names, inputs echoed without bound, a path in a
message, versions checked differently by different methods. Each answers with a clear status over the wire."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import expect
from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.inference import grpc_service_pb2_grpc
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc, rollout_pb2, telemetry_pb2
from vigil.server.app import App

LONG_VERSION = "1" * 5000
"""More digits than Python's int() takes from a string (4,300)."""
LONG_NAME = "m" * 300
"""Longer than a file name may be (255 bytes)."""
HUGE = "x" * 15_000
"""Echoed whole, it would pass the 8 KiB of metadata a client accepts for the status message."""


@pytest.fixture
def oip_stub(channel: grpc.aio.Channel) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


async def test_an_oip_version_too_long_for_an_int_is_invalid_everywhere(
        oip_stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    infer = oip.ModelInferRequest(model_name="add", model_version=LONG_VERSION)
    calls = [
        oip_stub.ModelInfer(infer),
        oip_stub.ModelReady(oip.ModelReadyRequest(name="add", version=LONG_VERSION)),
        oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="add", version=LONG_VERSION)),
        oip_stub.ModelStatistics(oip.ModelStatisticsRequest(name="add", version=LONG_VERSION)),
    ]
    for call in calls:
        await expect(call, grpc.StatusCode.INVALID_ARGUMENT, "model_version has 5000 digits", "at most 18")

    async def one() -> AsyncIterator[oip.ModelInferRequest]:
        yield infer

    answers = [a async for a in oip_stub.ModelStreamInfer(one())]
    assert len(answers) == 1
    assert answers[0].error_message.startswith("INVALID_ARGUMENT: model_version has 5000 digits")


async def test_a_model_name_longer_than_a_folder_name_is_invalid_for_loading(
        stub: inference_pb2_grpc.InferenceStub, oip_stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    await expect(stub.LoadModel(pb.LoadModelRequest(model_name=LONG_NAME)), grpc.StatusCode.INVALID_ARGUMENT,
                 "at most 255 bytes")
    await expect(oip_stub.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name=LONG_NAME)),
                 grpc.StatusCode.INVALID_ARGUMENT, "at most 255 bytes")


async def test_messages_quote_a_bounded_prefix_of_what_was_sent(
        stub: inference_pb2_grpc.InferenceStub, oip_stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    calls = [
        stub.Predict(pb.PredictRequest(model_name=HUGE)),
        stub.GetModelMetadata(pb.GetModelMetadataRequest(model_name=HUGE)),
        stub.UnloadModel(pb.UnloadModelRequest(model_name=HUGE)),
        oip_stub.ModelMetadata(oip.ModelMetadataRequest(name=HUGE)),
        stub.Feedback(pb.FeedbackRequest(request_id=HUGE, labels=["benign"])),
    ]
    for call in calls:
        details = await expect(call, grpc.StatusCode.NOT_FOUND, "15000 characters")
        assert len(details.encode()) <= 1024
    details = await expect(stub.LoadModel(pb.LoadModelRequest(model_name=HUGE)), grpc.StatusCode.INVALID_ARGUMENT,
                           "15000 characters")
    assert len(details.encode()) <= 1024


async def test_a_missing_model_folder_does_not_reveal_where_the_repository_is(
        app: App, stub: inference_pb2_grpc.InferenceStub) -> None:
    details = await expect(stub.LoadModel(pb.LoadModelRequest(model_name="absent")), grpc.StatusCode.NOT_FOUND,
                           "'absent' has no folder in the model repository")
    assert str(app.settings.models_dir) not in details and "/" not in details


async def test_a_negative_version_is_invalid_for_metadata_as_for_predict(stub: inference_pb2_grpc.InferenceStub
                                                                         ) -> None:
    for call in (stub.GetModelMetadata(pb.GetModelMetadataRequest(model_name="add", model_version=-1)),
                 stub.Predict(pb.PredictRequest(model_name="add", model_version=-1))):
        await expect(call, grpc.StatusCode.INVALID_ARGUMENT, "model_version must be 0 (latest) or a positive number")


def _made_up_calls(stub: inference_pb2_grpc.InferenceStub, oip_stub: grpc_service_pb2_grpc.GRPCInferenceServiceStub,
                   health: health_pb2_grpc.HealthStub) -> dict[str, Callable[[str], Awaitable[object]]]:
    """Every method that takes a model name, as a call with a given (made-up) name."""
    return {
        "Predict": lambda n: stub.Predict(pb.PredictRequest(model_name=n)),
        "GetModelMetadata": lambda n: stub.GetModelMetadata(pb.GetModelMetadataRequest(model_name=n)),
        "LoadModel": lambda n: stub.LoadModel(pb.LoadModelRequest(model_name=n)),
        "UnloadModel": lambda n: stub.UnloadModel(pb.UnloadModelRequest(model_name=n)),
        "SetRollout": lambda n: stub.SetRollout(rollout_pb2.SetRolloutRequest(model_name=n)),
        "GetRollout": lambda n: stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name=n)),
        "ModelInfer": lambda n: oip_stub.ModelInfer(oip.ModelInferRequest(model_name=n)),
        "ModelReady": lambda n: oip_stub.ModelReady(oip.ModelReadyRequest(name=n)),
        "ModelMetadata": lambda n: oip_stub.ModelMetadata(oip.ModelMetadataRequest(name=n)),
        "ModelStatistics": lambda n: oip_stub.ModelStatistics(oip.ModelStatisticsRequest(name=n)),
        "RepositoryModelLoad": lambda n: oip_stub.RepositoryModelLoad(oip.RepositoryModelLoadRequest(model_name=n)),
        "RepositoryModelUnload": lambda n: oip_stub.RepositoryModelUnload(
            oip.RepositoryModelUnloadRequest(model_name=n)),
        "HealthCheck": lambda n: health.Check(health_pb2.HealthCheckRequest(service=f"model/{n}")),
    }


async def _send(call: Callable[[str], Awaitable[object]], names: Sequence[str]) -> None:
    for start in range(0, len(names), 100):
        outcomes = await asyncio.gather(*(call(n) for n in names[start:start + 100]), return_exceptions=True)
        for outcome in outcomes:  # every one refused (ModelReady answers ready=false)
            assert isinstance(outcome, grpc.aio.AioRpcError) or getattr(outcome, "ready", None) is False, outcome


async def _scrape(app: App) -> tuple[str, str]:
    """/metrics and the report, once the cancelled Telemetry streams have ended (and so been counted)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.get(f"http://127.0.0.1:{app.http_port}/metrics") as response:
                metrics = await response.text()
            if 'vigil_requests_in_flight{method="Telemetry"} 0.0' in metrics:
                break
            await asyncio.sleep(0.05)
        async with session.get(f"http://127.0.0.1:{app.http_port}/report.json?since=1h") as response:
            report = await response.text()
    return metrics, report


def _series(metrics: str) -> set[str]:
    """Every series on a /metrics page (name and labels, without the value)."""
    return {line.rsplit(" ", 1)[0] for line in metrics.splitlines() if line and not line.startswith("#")}


def _resident_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _send_everywhere(channel: grpc.aio.Channel, names: Sequence[str]) -> None:
    """`names` through every method that takes a model name, in BatchPredict items, in an Open Inference Protocol
    stream and in Telemetry subscriptions' model filters."""
    stub = inference_pb2_grpc.InferenceStub(channel)
    oip_stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    for call in _made_up_calls(stub, oip_stub, health_pb2_grpc.HealthStub(channel)).values():
        await _send(call, names)
    for start in range(0, len(names), 50):  # max_batch_items is 50 in the tests' settings
        batch = await stub.BatchPredict(pb.BatchPredictRequest(
            requests=[pb.PredictRequest(model_name=n) for n in names[start:start + 50]]))
        assert all(item.status.code == grpc.StatusCode.NOT_FOUND.value[0] for item in batch.results)

    async def stream_requests() -> AsyncIterator[oip.ModelInferRequest]:
        for name in names:
            yield oip.ModelInferRequest(model_name=name, id=name)

    answers = [a async for a in oip_stub.ModelStreamInfer(stream_requests())]
    assert len(answers) == len(names) and all(a.error_message.startswith("NOT_FOUND") for a in answers)
    for start in range(0, min(len(names), 500), 50):
        frames = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100, models=names[start:start + 50]))
        await frames.read()
        frames.cancel()


async def test_made_up_model_names_leave_nothing_behind(app: App, channel: grpc.aio.Channel) -> None:
    """5,000 names that are no model, through every method that takes one: /metrics, the report and memory stay
    flat."""
    await _send_everywhere(channel, [f"warm-{i}" for i in range(3)])  # each method's refusals are counted once
    metrics_before, report_before = await _scrape(app)
    resident_before = _resident_mib()

    await _send_everywhere(channel, [f"made-up-{i}" for i in range(5000)])

    metrics_after, report_after = await _scrape(app)
    assert "made-up" not in metrics_after and "made-up" not in report_after
    assert _series(metrics_after) == _series(metrics_before)
    assert abs(len(report_after) - len(report_before)) < 2000  # counts grow a digit or so, no entries are added
    assert _resident_mib() - resident_before < 64, "memory grew with made-up names"
