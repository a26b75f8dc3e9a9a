"""Input limits, checked before a request is queued: string element size, non-finite floats, message size."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from tests import onnx_models
from tests.conftest import expect, running_app
from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.inference import grpc_service_pb2_grpc
from vigil.protos.tensors import DataType, from_array, to_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.errors import InvalidInput
from vigil.server.inference.validation import Limits, check_inputs
from vigil.server.models.config import load_config
from vigil.server.models.signature import Signature, TensorSpec
from vigil.server.settings import DEFAULT_MODELS_DIR, LimitSettings

Stub = inference_pb2_grpc.InferenceStub
OipStub = grpc_service_pb2_grpc.GRPCInferenceServiceStub
Code = grpc.StatusCode

STRING_LIMIT = LimitSettings().max_string_bytes  # the default, 1 MiB: under the test servers' 4 MiB messages
NAN_ROW = np.zeros((1, 30), np.float32)
NAN_ROW[0, 3], NAN_ROW[0, 7] = np.nan, -np.inf


def predict(model: str, typed: bool = False, **arrays: np.ndarray) -> pb.PredictRequest:
    return pb.PredictRequest(model_name=model, inputs=[from_array(k, v, typed=typed) for k, v in arrays.items()])


def strings(*values: bytes) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array.reshape(-1, 2)


def infer_bytes(values: list[bytes], *, typed: bool) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name="identity_string")
    tensor = request.inputs.add(name="x", datatype="BYTES", shape=[len(values) // 2, 2])
    if typed:
        tensor.contents.bytes_contents.extend(values)
    else:
        request.raw_input_contents.append(b"".join(len(v).to_bytes(4, "little") + v for v in values))
    return request


def infer_fp32(model: str, name: str, array: np.ndarray) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="FP32", shape=array.shape)
    request.raw_input_contents.append(array.astype("<f4").tobytes())
    return request


# max_string_bytes


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
async def test_string_element_over_the_limit_is_refused_natively(stub: Stub, typed: bool) -> None:
    x = strings(b"a", b"b", b"c", b"x" * (STRING_LIMIT + 1))
    await expect(stub.Predict(predict("identity_string", typed=typed, x=x)), Code.INVALID_ARGUMENT,
                 f"input 'x' element 3 has {STRING_LIMIT + 1} bytes", f"max_string_bytes={STRING_LIMIT}")


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
async def test_string_element_over_the_limit_is_refused_over_oip(channel: grpc.aio.Channel, typed: bool) -> None:
    values = [b"a", b"x" * (STRING_LIMIT + 1)]
    await expect(OipStub(channel).ModelInfer(infer_bytes(values, typed=typed)), Code.INVALID_ARGUMENT,
                 f"input 'x' element 1 has {STRING_LIMIT + 1} bytes", f"max_string_bytes={STRING_LIMIT}")


async def test_string_limit_counts_utf8_bytes_not_characters(stub: Stub, channel: grpc.aio.Channel) -> None:
    at_limit = "é".encode() * (STRING_LIMIT // 2)  # 2 bytes a character: exactly the limit
    over = at_limit + "é".encode()  # STRING_LIMIT // 2 + 1 characters, under the limit as characters
    response = await stub.Predict(predict("identity_string", x=strings(at_limit, b"ok")))
    assert to_array(response.outputs[0]).tolist() == [[at_limit, b"ok"]]
    await expect(stub.Predict(predict("identity_string", x=strings(b"ok", over))), Code.INVALID_ARGUMENT,
                 f"element 1 has {STRING_LIMIT + 2} bytes")
    answer = await OipStub(channel).ModelInfer(infer_bytes([at_limit, b"ok"], typed=False))
    assert answer.raw_output_contents[0].endswith(b"ok")
    await expect(OipStub(channel).ModelInfer(infer_bytes([over, b"ok"], typed=True)), Code.INVALID_ARGUMENT,
                 f"element 0 has {STRING_LIMIT + 2} bytes", "max_string_bytes")


async def test_string_limit_follows_the_setting(model_repo: Path) -> None:
    limits = LimitSettings(max_message_bytes=4 * 1024 * 1024, max_string_bytes=8)
    async with running_app(model_repo, limits=limits) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = Stub(channel)
        await stub.Predict(predict("identity_string", x=strings(b"12345678", b"")))
        await expect(stub.Predict(predict("identity_string", x=strings(b"123456789", b""))),
                     Code.INVALID_ARGUMENT, "input 'x' element 0 has 9 bytes", "max_string_bytes=8")


def test_string_limit_in_check_inputs() -> None:
    signature = Signature(inputs=(TensorSpec("text", DataType.STRING, (None,)),), outputs=())
    limits = Limits(max_rows_per_request=100, max_tensor_elements=100, max_string_bytes=4)
    for fits in (np.array(["abcd", "éé"], dtype=object), np.array(["ab", "cd"]), np.array([b"abcd"])):
        assert check_inputs("m", {"text": fits}, signature, batching=True, limits=limits) == len(fits)
    for over, size in ((np.array(["ok", "€€"], dtype=object), 6), (np.array(["ok", "abcde"]), 5),
                       (np.array([b"", b"abcde"]), 5)):
        with pytest.raises(InvalidInput, match=f"input 'text' element 1 has {size} bytes.*max_string_bytes=4"):
            check_inputs("m", {"text": over}, signature, batching=True, limits=limits)


# nonfinite_inputs


def test_bundled_clinical_model_rejects_nonfinite_inputs() -> None:
    assert load_config(DEFAULT_MODELS_DIR / "breast_cancer").nonfinite_inputs == "reject"


async def test_nonfinite_input_is_refused_natively(stub: Stub) -> None:
    await expect(stub.Predict(predict("breast_cancer", features=np.vstack([np.ones((1, 30), np.float32), NAN_ROW]))),
                 Code.INVALID_ARGUMENT, "input 'features' holds 2 NaN or infinite values",
                 "model 'breast_cancer'", 'nonfinite_inputs = "reject"')
    response = await stub.Predict(predict("breast_cancer", features=np.ones((2, 30), np.float32)))
    assert len(response.predicted_labels) == 2


async def test_nonfinite_input_is_refused_over_oip(channel: grpc.aio.Channel) -> None:
    await expect(OipStub(channel).ModelInfer(infer_fp32("breast_cancer", "features", NAN_ROW)),
                 Code.INVALID_ARGUMENT, "input 'features' holds 2 NaN or infinite values", "nonfinite_inputs")
    answer = await OipStub(channel).ModelInfer(infer_fp32("breast_cancer", "features", np.ones((1, 30))))
    assert [o.name for o in answer.outputs] == ["label", "probabilities"]


@pytest.fixture(scope="module")
def policy_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same graphs twice: once refusing non-finite inputs, once (the default) passing them on."""
    root = tmp_path_factory.mktemp("policy_models")
    for name, policy in (("strict", 'nonfinite_inputs = "reject"\n'), ("lenient", "")):
        onnx_models.classifier_model(root / f"{name}_classifier" / "1" / "model.onnx")
        onnx_models.mixed_model(root / f"{name}_mixed" / "1" / "model.onnx")
        (root / f"{name}_classifier" / "config.toml").write_text(policy)
        (root / f"{name}_mixed" / "config.toml").write_text("max_batch_size = 8\n" + policy)
    return root


async def test_nonfinite_policy_is_per_model_and_checks_floats_only(policy_repo: Path) -> None:
    nan = np.array([[np.inf, 0.0, 1.0]], np.float32)
    mixed = {"ids": np.array([[1, 2, 3]], np.int64), "weights": np.array([[0.5, np.nan, 2.0]]),
             "mask": np.array([[True, False, True]])}
    async with running_app(policy_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = Stub(channel)
        await expect(stub.Predict(predict("strict_classifier", features=nan)), Code.INVALID_ARGUMENT,
                     "input 'features' holds 1 NaN or infinite values", "model 'strict_classifier'")
        await expect(stub.Predict(predict("strict_mixed", **mixed)), Code.INVALID_ARGUMENT,
                     "input 'weights' holds 1 NaN", "model 'strict_mixed'")  # FP64 too; INT64 and BOOL unchecked
        finite = dict(mixed, weights=np.array([[0.5, 1.0, 2.0]]))
        got = to_array((await stub.Predict(predict("strict_mixed", **finite))).outputs[0])
        np.testing.assert_array_equal(got, [[0.5, 0.0, 6.0]])
        lenient = await stub.Predict(predict("lenient_classifier", features=nan))  # "allow": the model decides
        assert np.isnan(to_array(lenient.outputs[0])).any()
        await stub.Predict(predict("lenient_mixed", **mixed))


def test_nonfinite_count_in_check_inputs() -> None:
    specs = (TensorSpec("x", DataType.FP32, (None, 2)), TensorSpec("n", DataType.INT64, (None, 2)))
    signature = Signature(inputs=specs, outputs=())
    limits = Limits(max_rows_per_request=100, max_tensor_elements=100, max_string_bytes=100)
    x = np.array([[np.nan, 1.0], [np.inf, -np.inf]], np.float32)
    n = np.array([[1, 2], [3, 4]], np.int64)
    assert check_inputs("m", {"x": x, "n": n}, signature, batching=True, limits=limits) == 2  # "allow"
    with pytest.raises(InvalidInput, match="input 'x' holds 3 NaN or infinite values; model 'm' refuses them"):
        check_inputs("m", {"x": x, "n": n}, signature, batching=True, limits=limits, nonfinite_inputs="reject")
    finite = np.ones((2, 2), np.float32)
    assert check_inputs("m", {"x": finite, "n": n}, signature, batching=True, limits=limits,
                        nonfinite_inputs="reject") == 2


# max_message_bytes (enforced by gRPC itself)


async def test_message_over_the_size_limit_is_refused_and_the_server_keeps_serving(stub: Stub) -> None:
    limit = 4 * 1024 * 1024  # make_settings' max_message_bytes
    big = np.zeros((limit // 16 + 1, 4), np.float32)  # a and b together are just over the limit
    await expect(stub.Predict(predict("add", a=big, b=big)), Code.RESOURCE_EXHAUSTED)
    small = np.ones((2, 4), np.float32)
    response = await stub.Predict(predict("add", a=small, b=small))
    assert {t.name: to_array(t) for t in response.outputs}["product"].tolist() == small.tolist()


async def test_shapes_numpy_cannot_hold_are_invalid_even_when_empty(stub: Stub, channel: grpc.aio.Channel) -> None:
    message = pb.PredictRequest(model_name="add", inputs=[from_array("a", np.ones((1, 4), np.float32))])
    message.inputs.add(name="b", dtype=DataType.FP32, shape=[2**62, 4, 0])  # no elements, yet too many bytes
    await expect(stub.Predict(message), Code.INVALID_ARGUMENT, "input 'b'", "numpy cannot hold shape")
    request = oip.ModelInferRequest(model_name="add")
    request.inputs.add(name="a", datatype="BOOL", shape=[0] * 100)  # more dimensions than numpy allows
    await expect(OipStub(channel).ModelInfer(request), Code.INVALID_ARGUMENT, "input 'a'", "numpy cannot hold shape")
    request = oip.ModelInferRequest(model_name="add", model_version="²")  # a digit to str.isdigit, not to int()
    await expect(OipStub(channel).ModelInfer(request), Code.INVALID_ARGUMENT, "model_version must be a number")
