"""Every class of bad input gets its status code over the wire, with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import expect, running_app
from vigil.protos.tensors import DataType, from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc, telemetry_pb2, tensor_pb2

Stub = inference_pb2_grpc.InferenceStub
Code = grpc.StatusCode


def request(model: str = "add", version: int = 0, **arrays: np.ndarray) -> pb.PredictRequest:
    return pb.PredictRequest(model_name=model, model_version=version,
                             inputs=[from_array(k, v) for k, v in arrays.items()])


def ab(rows: int = 2, cols: int = 4, dtype: type = np.float32) -> dict[str, np.ndarray]:
    return {"a": np.ones((rows, cols), dtype), "b": np.ones((rows, cols), dtype)}


async def test_unknown_model(stub: Stub) -> None:
    await expect(stub.Predict(request("nope", **ab())), Code.NOT_FOUND, "'nope'", "add")


async def test_unknown_version(stub: Stub) -> None:
    await expect(stub.Predict(request("add", 7, **ab())), Code.NOT_FOUND, "version 7", "1, 2")


async def test_negative_version(stub: Stub) -> None:
    await expect(stub.Predict(request("add", -1, **ab())), Code.INVALID_ARGUMENT, "model_version")


async def test_empty_model_name(stub: Stub) -> None:
    await expect(stub.Predict(request("", **ab())), Code.INVALID_ARGUMENT, "model_name")


async def test_model_that_failed_to_load_is_unavailable(stub: Stub) -> None:
    await expect(stub.Predict(request("corrupt", x=np.ones((1, 2), np.float32))), Code.UNAVAILABLE,
                 "corrupt", "failed")


async def test_missing_input(stub: Stub) -> None:
    await expect(stub.Predict(request(a=np.ones((2, 4), np.float32))), Code.INVALID_ARGUMENT,
                 "missing input 'b'", "'b' FP32 [-1, 4]")


async def test_extra_input(stub: Stub) -> None:
    await expect(stub.Predict(request(**ab(), c=np.ones((2, 4), np.float32))), Code.INVALID_ARGUMENT,
                 "no input 'c'", "'a' FP32")


async def test_duplicate_input(stub: Stub) -> None:
    message = request(**ab())
    message.inputs.append(from_array("a", np.ones((2, 4), np.float32)))
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "'a'", "more than once")


async def test_unnamed_input(stub: Stub) -> None:
    await expect(stub.Predict(request(**{"": np.ones((2, 4), np.float32)})), Code.INVALID_ARGUMENT, "no name")


async def test_wrong_dtype(stub: Stub) -> None:
    await expect(stub.Predict(request(**ab(dtype=np.float64))), Code.INVALID_ARGUMENT,
                 "input 'a'", "expected dtype FP32, got FP64")


async def test_wrong_static_dimension(stub: Stub) -> None:
    await expect(stub.Predict(request(**ab(cols=5))), Code.INVALID_ARGUMENT,
                 "input 'a'", "expected shape [-1, 4], got [2, 5]")


async def test_wrong_rank(stub: Stub) -> None:
    arrays = {"a": np.ones((2, 4, 1), np.float32), "b": np.ones((2, 4), np.float32)}
    await expect(stub.Predict(request(**arrays)), Code.INVALID_ARGUMENT, "input 'a'", "[2, 4, 1]")


async def test_byte_length_not_matching_shape(stub: Stub) -> None:
    message = request(**ab())
    message.inputs[0].raw_data = message.inputs[0].raw_data[:-3]
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "input 'a'", "29 bytes", "needs 32")


async def test_typed_contents_count_not_matching_shape(stub: Stub) -> None:
    message = request(b=np.ones((2, 4), np.float32))
    message.inputs.append(tensor_pb2.Tensor(name="a", dtype=DataType.FP32, shape=[2, 4],
                                            contents=tensor_pb2.TensorContents(fp32_contents=[1.0] * 7)))
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "input 'a'", "7 elements", "needs 8")


async def test_typed_contents_in_the_wrong_field(stub: Stub) -> None:
    message = request(b=np.ones((2, 4), np.float32))
    message.inputs.append(tensor_pb2.Tensor(name="a", dtype=DataType.FP32, shape=[2, 4],
                                            contents=tensor_pb2.TensorContents(int64_contents=[1] * 8)))
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "input 'a'", "int64_contents")


async def test_raw_and_typed_together(stub: Stub) -> None:
    message = request(**ab())
    message.inputs[0].contents.fp32_contents.extend([1.0] * 8)
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "input 'a'", "both raw_data and contents")


async def test_unspecified_dtype(stub: Stub) -> None:
    message = request(b=np.ones((2, 4), np.float32))
    message.inputs.append(tensor_pb2.Tensor(name="a", shape=[2, 4], raw_data=b"\0" * 32))
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "input 'a'", "DATA_TYPE_UNSPECIFIED")


async def test_negative_dimension(stub: Stub) -> None:
    message = request(b=np.ones((2, 4), np.float32))
    message.inputs.append(tensor_pb2.Tensor(name="a", dtype=DataType.FP32, shape=[-2, 4]))
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "input 'a'", "negative")


async def test_inputs_with_different_row_counts(stub: Stub) -> None:
    arrays = {"a": np.ones((2, 4), np.float32), "b": np.ones((3, 4), np.float32)}
    await expect(stub.Predict(request(**arrays)), Code.INVALID_ARGUMENT, "input 'b' has 3 rows", "'a' has 2")


async def test_zero_rows(stub: Stub) -> None:
    await expect(stub.Predict(request(**ab(rows=0))), Code.INVALID_ARGUMENT, "0 rows")


async def test_rows_over_the_limit(stub: Stub) -> None:
    await expect(stub.Predict(request(**ab(rows=1001))), Code.INVALID_ARGUMENT,
                 "1001 rows", "max_rows_per_request=1000")


async def test_tensor_elements_over_the_limit(stub: Stub) -> None:
    tokens = np.zeros((2, 62501, 8), np.float32)  # 1,000,016 elements; the test limit is 1,000,000
    await expect(stub.Predict(request("sequence", tokens=tokens)), Code.INVALID_ARGUMENT,
                 "input 'tokens'", "max_tensor_elements=1000000")


async def test_message_over_the_size_limit(stub: Stub) -> None:
    big = np.zeros((1, 5 * 1024 * 1024 // 4 // 8, 8), np.float32)  # 5 MiB; the test limit is 4 MiB
    await expect(stub.Predict(request("sequence", tokens=big)), Code.RESOURCE_EXHAUSTED, "larger than max")


async def test_unknown_output(stub: Stub) -> None:
    message = request(**ab())
    message.output_names.append("difference")
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "no output 'difference'", "sum, product")


async def test_invalid_utf8_string(stub: Stub) -> None:
    x = np.array([[b"ok", b"\xff\xfe"]], dtype=object)
    await expect(stub.Predict(request("identity_string", x=x)), Code.INVALID_ARGUMENT,
                 "input 'x'", "not valid UTF-8")


async def test_fixed_shape_model_rejects_other_shapes(stub: Stub) -> None:
    await expect(stub.Predict(request("fixed", x=np.ones((3, 2), np.float32))), Code.INVALID_ARGUMENT,
                 "input 'x'", "expected shape [2, 2], got [3, 2]")


async def test_onnxruntime_failure_is_internal_and_generic(stub: Stub) -> None:
    details = await expect(stub.Predict(request("reshape", x=np.ones((1, 4), np.float32))), Code.INTERNAL,
                           "inference failed", "request id")
    assert "Traceback" not in details and "Reshape" not in details and "onnxruntime" not in details.lower()
    # The server keeps serving: the same model answers a good request, and other models too.
    good = await stub.Predict(request("reshape", x=np.ones((2, 3), np.float32)))
    assert good.outputs[0].shape == [2, 3]
    assert (await stub.Predict(request(**ab()))).model_name == "add"


async def test_batch_predict_over_the_item_limit(stub: Stub) -> None:
    items = [request(**ab(rows=1)) for _ in range(51)]
    await expect(stub.BatchPredict(pb.BatchPredictRequest(requests=items)), Code.INVALID_ARGUMENT,
                 "51 items", "max_batch_items=50")


async def test_telemetry_stream_is_unimplemented_when_telemetry_is_off(model_repo: Path) -> None:
    async with running_app(model_repo, telemetry={"enabled": False}) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        call = inference_pb2_grpc.InferenceStub(channel).Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=1000))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == Code.UNIMPLEMENTED and "VIGIL_TELEMETRY__ENABLED" in (info.value.details() or "")


async def test_metadata_errors(stub: Stub) -> None:
    await expect(stub.GetModelMetadata(pb.GetModelMetadataRequest(model_name="nope")), Code.NOT_FOUND, "'nope'")
    await expect(stub.GetModelMetadata(pb.GetModelMetadataRequest(model_name="add", model_version=9)),
                 Code.NOT_FOUND, "version 9")
    await expect(stub.GetModelMetadata(pb.GetModelMetadataRequest()), Code.INVALID_ARGUMENT, "model_name")


async def test_garbage_bytes_in_every_field_never_crash_the_server(stub: Stub) -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        tensor = tensor_pb2.Tensor(
            name=str(rng.choice(["a", "b", "x", ""])),
            dtype=int(rng.integers(0, 16)),
            shape=[int(d) for d in rng.integers(-2, 6, size=rng.integers(0, 4))],
            raw_data=rng.bytes(int(rng.integers(0, 64))),
        )
        call = stub.Predict(pb.PredictRequest(model_name="add", inputs=[tensor]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == Code.INVALID_ARGUMENT, info.value.details()
    assert (await stub.Predict(request(**ab()))).model_name == "add"
