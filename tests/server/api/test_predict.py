"""Predict and BatchPredict over the wire give exactly what in-process ONNX Runtime gives on the same rows."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from tests.onnx_models import IDENTITY_TYPES
from vigil.protos.tensors import from_array, to_array
from vigil.protos.timing import SERVER_TIMING_KEY, parse_timing
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc

Stub = inference_pb2_grpc.InferenceStub


def reference(model_repo: Path, name: str, inputs: dict[str, np.ndarray], version: int = 1) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_repo / name / str(version) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


async def predict(stub: Stub, name: str, inputs: dict[str, np.ndarray], *, typed: bool = False,
                  version: int = 0, outputs: tuple[str, ...] = ()) -> pb.PredictResponse:
    request = pb.PredictRequest(model_name=name, model_version=version, output_names=list(outputs),
                                inputs=[from_array(k, v, typed=typed) for k, v in inputs.items()])
    return await stub.Predict(request)


def outputs_of(response: pb.PredictResponse) -> dict[str, np.ndarray]:
    return {t.name: to_array(t) for t in response.outputs}


def breast_cancer_rows(n: int = 20) -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data[:n].astype(np.float32)


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
async def test_bundled_model_matches_onnxruntime(stub: Stub, model_repo: Path, typed: bool) -> None:
    rows = breast_cancer_rows()
    response = await predict(stub, "breast_cancer", {"features": rows}, typed=typed)
    expected = reference(model_repo, "breast_cancer", {"features": rows})
    got = outputs_of(response)
    np.testing.assert_array_equal(got["label"], expected["label"])
    np.testing.assert_array_equal(got["probabilities"], expected["probabilities"])
    assert response.model_name == "breast_cancer" and response.model_version == 1
    labels = np.array(["malignant", "benign"])
    assert list(response.predicted_labels) == labels[expected["probabilities"].argmax(axis=1)].tolist()
    np.testing.assert_allclose(response.predicted_probabilities, expected["probabilities"].max(axis=1), rtol=1e-6)
    assert len(response.request_id) == 32


async def test_two_inputs_and_output_selection(stub: Stub, model_repo: Path) -> None:
    rng = np.random.default_rng(1)
    inputs = {"a": rng.normal(size=(5, 4)).astype(np.float32), "b": rng.normal(size=(5, 4)).astype(np.float32)}
    expected = reference(model_repo, "add", inputs, version=2)
    got = outputs_of(await predict(stub, "add", inputs))
    assert set(got) == {"sum", "product"}
    np.testing.assert_array_equal(got["sum"], expected["sum"])
    np.testing.assert_array_equal(got["product"], expected["product"])
    only = outputs_of(await predict(stub, "add", inputs, outputs=("product",)))
    assert list(only) == ["product"]
    np.testing.assert_array_equal(only["product"], expected["product"])


async def test_latest_version_by_default_and_named_version(stub: Stub, model_repo: Path) -> None:
    ones = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)}
    latest = await predict(stub, "add", ones)
    first = await predict(stub, "add", ones, version=1)
    assert latest.model_version == 2 and first.model_version == 1
    np.testing.assert_array_equal(outputs_of(latest)["sum"], np.full((1, 4), 102.0, np.float32))
    np.testing.assert_array_equal(outputs_of(first)["sum"], np.full((1, 4), 2.0, np.float32))


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
async def test_mixed_dtypes(stub: Stub, model_repo: Path, typed: bool) -> None:
    rng = np.random.default_rng(2)
    inputs = {
        "ids": rng.integers(-1000, 1000, size=(6, 3)).astype(np.int64),
        "weights": rng.normal(size=(6, 3)),
        "mask": rng.random((6, 3)) > 0.5,
    }
    expected = reference(model_repo, "mixed", inputs)
    got = outputs_of(await predict(stub, "mixed", inputs, typed=typed))
    assert got["masked"].dtype == np.float64 and got["next_ids"].dtype == np.int64
    np.testing.assert_array_equal(got["masked"], expected["masked"])
    np.testing.assert_array_equal(got["next_ids"], expected["next_ids"])


@pytest.mark.parametrize("kind", sorted(IDENTITY_TYPES))
@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
async def test_every_dtype_round_trips(stub: Stub, kind: str, typed: bool) -> None:
    if kind == "string":
        x = np.array([[b"alpha", b""], [b"with\x00nul", "ünïcode ✓".encode()]], dtype=object)
    else:
        info = np.finfo(np.float16) if kind == "fp16" else np.iinfo(np.dtype(kind))
        x = np.array([[info.min, info.max], [0, 1]], dtype=np.float16 if kind == "fp16" else np.dtype(kind))
    got = outputs_of(await predict(stub, f"identity_{kind}", {"x": x}, typed=typed))["y"]
    assert got.shape == x.shape
    if kind == "string":
        assert got.tolist() == x.tolist()
    else:
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, x)


async def test_dynamic_sequence_dimension(stub: Stub, model_repo: Path) -> None:
    rng = np.random.default_rng(3)
    for seq_len in (1, 5, 17):
        tokens = rng.normal(size=(3, seq_len, 8)).astype(np.float32)
        expected = reference(model_repo, "sequence", {"tokens": tokens})["mean"]
        np.testing.assert_array_equal(outputs_of(await predict(stub, "sequence", {"tokens": tokens}))["mean"], expected)


async def test_model_without_batch_dimension(stub: Stub) -> None:
    x = np.array([[1, 2], [3, 4]], np.float32)
    np.testing.assert_array_equal(outputs_of(await predict(stub, "fixed", {"x": x}))["y"], x * 2)


async def test_classifier_labels_from_config(stub: Stub, model_repo: Path) -> None:
    features = np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3]], np.float32)
    response = await predict(stub, "classifier", {"features": features})
    expected = reference(model_repo, "classifier", {"features": features})
    names = np.array(["red", "green", "blue"])
    assert list(response.predicted_labels) == names[expected["label"]].tolist()


async def test_request_ids_are_unique_and_timing_is_reported(stub: Stub) -> None:
    ones = {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)}
    ids = set()
    for _ in range(5):
        call = stub.Predict(pb.PredictRequest(model_name="add", inputs=[from_array(k, v) for k, v in ones.items()]))
        ids.add((await call).request_id)
        trailing = dict(await call.trailing_metadata())
        timing = parse_timing(trailing[SERVER_TIMING_KEY])
        assert timing["compute"] > 0
    assert len(ids) == 5


async def test_batch_predict_matches_single_predicts(stub: Stub, model_repo: Path) -> None:
    rows = breast_cancer_rows(9)
    items = [pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", rows[i : i + 3])])
             for i in range(0, 9, 3)]
    items.append(pb.PredictRequest(model_name="add", inputs=[from_array("a", np.ones((2, 4), np.float32)),
                                                              from_array("b", np.ones((2, 4), np.float32))]))
    response = await stub.BatchPredict(pb.BatchPredictRequest(requests=items))
    assert [r.status.code for r in response.results] == [0, 0, 0, 0]
    expected = reference(model_repo, "breast_cancer", {"features": rows})["probabilities"]
    got = np.concatenate([outputs_of(r.response)["probabilities"] for r in response.results[:3]])
    np.testing.assert_array_equal(got, expected)
    assert response.results[3].response.model_name == "add"


async def test_batch_predict_one_bad_item_does_not_fail_the_others(stub: Stub, model_repo: Path) -> None:
    rows = breast_cancer_rows(4)
    good = pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", rows)])
    wrong_shape = pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", rows[:, :10])])
    unknown = pb.PredictRequest(model_name="no_such_model", inputs=[from_array("features", rows)])
    response = await stub.BatchPredict(pb.BatchPredictRequest(requests=[good, wrong_shape, good, unknown]))
    codes = [r.status.code for r in response.results]
    assert codes == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0], 0, grpc.StatusCode.NOT_FOUND.value[0]]
    assert "features" in response.results[1].status.message
    assert "no_such_model" in response.results[3].status.message
    expected = reference(model_repo, "breast_cancer", {"features": rows})["probabilities"]
    for result in (response.results[0], response.results[2]):
        np.testing.assert_array_equal(outputs_of(result.response)["probabilities"], expected)
    assert not response.results[1].HasField("response")
