"""The official tritonclient[grpc], unchanged and in its own virtualenv, against a running Vigil server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vigil.server.app import App

SCENARIOS = Path(__file__).with_name("triton_scenarios.py")


def reference(model_repo: Path, name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


async def test_tritonclient_against_vigil(app: App, model_repo: Path, tritonclient_python: Path,
                                          tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    rng = np.random.default_rng(7)
    features = load_breast_cancer().data[:12].astype(np.float32)
    a, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    np.savez(tmp_path / "in.npz", features=features, a=a, b=b)
    process = await asyncio.create_subprocess_exec(
        str(tritonclient_python), str(SCENARIOS), f"127.0.0.1:{app.grpc_port}", str(tmp_path / "in.npz"),
        str(tmp_path / "out.npz"), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    out = np.load(tmp_path / "out.npz")

    assert report["live"] and report["ready"] and report["model_ready"] and not report["absent_ready"]
    assert report["server_metadata"]["name"] == "vigil"
    assert set(report["server_metadata"]["extensions"]) >= {"model_repository", "statistics"}
    metadata = report["metadata"]
    assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "30"]}]
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [("label", "INT64"), ("probabilities", "FP32")]
    assert [i["name"] for i in report["add_metadata"]["inputs"]] == ["a", "b"]

    expected = reference(model_repo, "breast_cancer", {"features": features})
    np.testing.assert_array_equal(out["raw_probabilities"], expected["probabilities"])
    np.testing.assert_array_equal(out["raw_label"], expected["label"])
    np.testing.assert_array_equal(out["typed_probabilities"], expected["probabilities"])
    assert report["raw_id"] == "raw-1" and report["typed_outputs"] == ["probabilities"]
    added = reference(model_repo, "add", {"a": a, "b": b})
    np.testing.assert_array_equal(out["add_product"], added["product"])
    assert report["add_outputs"] == ["product"]
    np.testing.assert_array_equal(out["typed_add_sum"], added["sum"])
    np.testing.assert_array_equal(out["typed_add_product"], added["product"])

    assert report["absent_code"] == "StatusCode.NOT_FOUND"
    assert report["wrong_shape_code"] == "StatusCode.INVALID_ARGUMENT"
    assert "features" in report["wrong_shape_message"] and "[-1, 30]" in report["wrong_shape_message"]

    assert report["stream_errors"] == 0 and report["stream_ids"] == sorted(f"s{i}" for i in range(100))
    rows = np.concatenate([features] * 9)[:100]
    # Streamed rows share runs of whatever sizes the batcher formed; this model's matrix kernels round the
    # last bit differently by batch size (seen: 6e-8), so equality here is to float32 rounding.
    np.testing.assert_allclose(out["stream_benign"], reference(
        model_repo, "breast_cancer", {"features": rows})["probabilities"][:, 1], rtol=1e-5, atol=1e-7)

    stats = report["statistics"]["model_stats"][0]
    assert stats["name"] == "breast_cancer" and stats["version"] == "1"
    # A fresh server: 2 infers of 12 rows and 100 streamed rows succeeded; the wrong shape failed.
    assert int(stats["inference_stats"]["success"]["count"]) == 102
    assert int(stats["inference_stats"]["fail"]["count"]) == 1
    assert int(stats["inference_count"]) == 2 * 12 + 100 and int(stats["execution_count"]) >= 1
    assert int(stats["inference_stats"]["queue"]["count"]) == 102 and int(stats["last_inference"]) > 0
    assert sum(int(b["compute_infer"]["count"]) for b in stats["batch_stats"]) == int(stats["execution_count"])
    index = {(m["name"], m.get("version")): m for m in report["index"]["models"]}
    assert index[("breast_cancer", "1")]["state"] == "READY"
    assert index[("corrupt", "1")]["state"] == "UNAVAILABLE" and index[("corrupt", "1")]["reason"]

    assert not report["unloaded_ready"] and report["loaded_ready"] and report["still_ready"]
    assert [(m["version"], m["state"]) for m in report["unloaded_index"]] == [("1", "UNLOADED"), ("2", "UNLOADED")]
    assert report["unloaded_infer_code"] == "StatusCode.UNAVAILABLE"
    np.testing.assert_array_equal(out["reloaded_add_sum"], added["sum"])
    assert report["load_corrupt_code"] == "StatusCode.FAILED_PRECONDITION"
    assert report["load_absent_code"] == "StatusCode.NOT_FOUND"
    assert report["load_config_code"] == "StatusCode.UNIMPLEMENTED"
