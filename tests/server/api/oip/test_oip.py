"""The Open Inference Protocol service: the native API's validation and status codes, BYTES, streamed errors."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.inference import grpc_service_pb2_grpc

Stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub
Code = grpc.StatusCode


@pytest.fixture
def oip_stub(channel: grpc.aio.Channel) -> Stub:
    return grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer_request(model: str = "add", version: str = "", **arrays: tuple[str, np.ndarray]) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model, model_version=version)
    for name, (datatype, array) in arrays.items():
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
    return request


def ab(rows: int = 2) -> dict[str, tuple[str, np.ndarray]]:
    return {"a": ("FP32", np.ones((rows, 4), np.float32)), "b": ("FP32", np.ones((rows, 4), np.float32))}


async def expect(call: object, code: grpc.StatusCode, *fragments: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in (info.value.details() or ""), info.value.details()


async def test_infer_returns_raw_outputs_and_echoes_the_id(oip_stub: Stub) -> None:
    request = infer_request(**ab())
    request.id = "my-id"
    request.parameters["whatever"].int64_param = 3  # not understood: ignored
    request.outputs.add(name="sum")
    response = await oip_stub.ModelInfer(request)
    assert response.id == "my-id" and response.model_name == "add" and response.model_version == "2"
    assert [o.name for o in response.outputs] == ["sum"] and list(response.outputs[0].shape) == [2, 4]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4"), np.full(8, 102.0))
    # the server keys the request by an id of its own, whatever the caller chose
    assert len(response.parameters["request_id"].string_param) == 32
    anonymous = await oip_stub.ModelInfer(infer_request(**ab()))
    assert anonymous.id == "" and len(anonymous.parameters["request_id"].string_param) == 32


async def test_bytes_round_trip(oip_stub: Stub) -> None:
    values = [b"alpha", "ünïcode".encode(), b"", b"x"]
    raw = b"".join(len(v).to_bytes(4, "little") + v for v in values)
    request = oip.ModelInferRequest(model_name="identity_string")
    request.inputs.add(name="x", datatype="BYTES", shape=[2, 2])
    request.raw_input_contents.append(raw)
    response = await oip_stub.ModelInfer(request)
    assert response.outputs[0].datatype == "BYTES" and response.raw_output_contents[0] == raw


@pytest.mark.parametrize(
    ("mutate", "code", "fragments"),
    [
        (lambda r: setattr(r, "model_name", "absent"), Code.NOT_FOUND, ("'absent'",)),
        (lambda r: setattr(r, "model_version", "9"), Code.NOT_FOUND, ("version 9",)),
        (lambda r: setattr(r, "model_version", "latest"), Code.INVALID_ARGUMENT, ("model_version",)),
        (lambda r: r.inputs[0].__setattr__("datatype", "BF16"), Code.INVALID_ARGUMENT, ("input 'a'", "BF16")),
        (lambda r: r.inputs[0].__setattr__("datatype", "FP64"), Code.INVALID_ARGUMENT,
         ("input 'a'", "raw_data holds 32 bytes")),
        (lambda r: r.raw_input_contents.__setitem__(1, b"\0" * 31), Code.INVALID_ARGUMENT, ("input 'b'", "31 bytes")),
        (lambda r: r.raw_input_contents.pop(), Code.INVALID_ARGUMENT, ("raw_input_contents has 1 entries",)),
        (lambda r: r.inputs[0].contents.fp32_contents.extend([1.0] * 8), Code.INVALID_ARGUMENT,
         ("input 'a'", "raw_input_contents")),
        (lambda r: r.outputs.add(name="difference"), Code.INVALID_ARGUMENT, ("no output 'difference'",)),
    ],
    ids=["unknown-model", "unknown-version", "version-not-a-number", "unsupported-datatype", "wrong-datatype",
         "short-bytes", "raw-count", "raw-and-contents", "unknown-output"],
)
async def test_statuses_match_the_native_api(oip_stub: Stub, mutate, code: grpc.StatusCode,  # type: ignore[no-untyped-def]
                                             fragments: tuple[str, ...]) -> None:
    request = infer_request(**ab())
    mutate(request)
    await expect(oip_stub.ModelInfer(request), code, *fragments)


async def test_missing_input_wrong_shape_and_failed_model(oip_stub: Stub) -> None:
    await expect(oip_stub.ModelInfer(infer_request(a=("FP32", np.ones((2, 4), np.float32)))),
                 Code.INVALID_ARGUMENT, "missing input 'b'")
    await expect(oip_stub.ModelInfer(infer_request(a=("FP32", np.ones((2, 5), np.float32)),
                                                   b=("FP32", np.ones((2, 5), np.float32)))),
                 Code.INVALID_ARGUMENT, "input 'a'", "expected shape [-1, 4], got [2, 5]")
    await expect(oip_stub.ModelInfer(infer_request("corrupt", x=("FP32", np.ones((1, 2), np.float32)))),
                 Code.UNAVAILABLE, "corrupt")
    await expect(oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="absent")), Code.NOT_FOUND, "absent")


async def test_model_ready_per_version(oip_stub: Stub) -> None:
    assert (await oip_stub.ModelReady(oip.ModelReadyRequest(name="add", version="1"))).ready
    assert not (await oip_stub.ModelReady(oip.ModelReadyRequest(name="add", version="7"))).ready
    assert not (await oip_stub.ModelReady(oip.ModelReadyRequest(name="corrupt"))).ready


async def test_stream_answers_errors_in_the_stream_and_keeps_going(oip_stub: Stub) -> None:
    good = infer_request(**ab(1))
    bad = infer_request(a=("FP32", np.ones((1, 4), np.float32)))

    async def requests():  # type: ignore[no-untyped-def]
        for i in range(10):
            message = oip.ModelInferRequest()
            message.CopyFrom(bad if i == 4 else good)
            message.id = str(i)
            yield message

    answers = [a async for a in oip_stub.ModelStreamInfer(requests())]
    assert sorted(a.infer_response.id for a in answers) == [str(i) for i in range(10)]
    failed = [a for a in answers if a.error_message]
    assert len(failed) == 1 and failed[0].infer_response.id == "4"
    assert failed[0].error_message.startswith("INVALID_ARGUMENT") and "missing input 'b'" in failed[0].error_message


async def test_statistics_of_every_version_and_the_index(oip_stub: Stub) -> None:
    await oip_stub.ModelInfer(infer_request(**ab(3)))
    stats = await oip_stub.ModelStatistics(oip.ModelStatisticsRequest(name="add"))
    by_version = {s.version: s for s in stats.model_stats}
    assert set(by_version) == {"1", "2"}
    assert by_version["2"].inference_count == 3 and by_version["2"].inference_stats.success.count == 1
    assert by_version["2"].batch_stats[0].batch_size == 3 and by_version["2"].inference_stats.queue.ns > 0
    ready = await oip_stub.RepositoryIndex(oip.RepositoryIndexRequest(ready=True))
    assert all(m.state == "READY" for m in ready.models) and ("corrupt", "1") not in {
        (m.name, m.version) for m in ready.models}


async def test_reflection_lists_the_protocol(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    responses = [r async for r in stub.ServerReflectionInfo(requests())]
    assert "inference.GRPCInferenceService" in {s.name for s in responses[0].list_services_response.service}
