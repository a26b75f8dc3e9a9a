"""What an outside probe of the server found: long versions and names, inputs echoed without bound, a path in a
message, versions checked differently by different methods. Each answers with a clear status over the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.conftest import expect
from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.inference import grpc_service_pb2_grpc
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
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
