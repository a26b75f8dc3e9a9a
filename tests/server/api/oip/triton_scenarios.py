"""Drive a server with the official tritonclient[grpc] package, unchanged; print what it saw as JSON.

Runs in tritonclient's own virtualenv (it pins protobuf<7), so it imports nothing from this project.
Usage: python triton_scenarios.py HOST:PORT INPUTS.npz OUT.npz
"""

from __future__ import annotations

import json
import queue
import sys

import grpc
import numpy as np
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


def code_of(call) -> str:  # type: ignore[no-untyped-def]
    try:
        call()
    except InferenceServerException as exc:
        return str(exc.status())
    return "OK"


def main() -> None:
    url, inputs_path, out_path = sys.argv[1:4]
    data = np.load(inputs_path)
    client = tc.InferenceServerClient(url=url)
    report: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("breast_cancer"),
        "absent_ready": client.is_model_ready("absent"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata("breast_cancer", as_json=True),
        "add_metadata": client.get_model_metadata("add", model_version="1", as_json=True),
    }
    outputs: dict[str, np.ndarray] = {}

    # infer with raw inputs, the way tritonclient sends them
    features = tc.InferInput("features", list(data["features"].shape), "FP32")
    features.set_data_from_numpy(data["features"])
    result = client.infer("breast_cancer", [features], request_id="raw-1")
    outputs["raw_probabilities"] = result.as_numpy("probabilities")
    outputs["raw_label"] = result.as_numpy("label")
    report["raw_id"] = result.get_response(as_json=True).get("id")

    a = tc.InferInput("a", list(data["a"].shape), "FP32")
    a.set_data_from_numpy(data["a"])
    b = tc.InferInput("b", list(data["b"].shape), "FP32")
    b.set_data_from_numpy(data["b"])
    add = client.infer("add", [a, b], model_version="1", outputs=[tc.InferRequestedOutput("product")])
    outputs["add_product"] = add.as_numpy("product")
    report["add_outputs"] = [o["name"] for o in add.get_response(as_json=True)["outputs"]]

    # infer with typed contents, through the package's own generated stubs
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))
    typed = service_pb2.ModelInferRequest(model_name="breast_cancer", id="typed-1")
    typed.parameters["unknown_parameter"].string_param = "ignored"
    tensor = typed.inputs.add(name="features", datatype="FP32", shape=list(data["features"].shape))
    tensor.contents.fp32_contents.extend(data["features"].ravel().tolist())
    typed.outputs.add(name="probabilities")
    response = stub.ModelInfer(typed)
    report["typed_outputs"] = [o.name for o in response.outputs]
    outputs["typed_probabilities"] = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(
        list(response.outputs[0].shape))
    typed_add = service_pb2.ModelInferRequest(model_name="add", model_version="1")
    for name in ("a", "b"):
        t = typed_add.inputs.add(name=name, datatype="FP32", shape=list(data[name].shape))
        t.contents.fp32_contents.extend(data[name].ravel().tolist())
    response = stub.ModelInfer(typed_add)
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        outputs[f"typed_add_{output.name}"] = np.frombuffer(raw, dtype="<f4").reshape(list(output.shape))

    # errors
    report["absent_code"] = code_of(lambda: client.infer("absent", [features]))
    wrong = tc.InferInput("features", [2, 29], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 29), np.float32))
    try:
        client.infer("breast_cancer", [wrong])
    except InferenceServerException as exc:
        report["wrong_shape_code"], report["wrong_shape_message"] = str(exc.status()), exc.message()

    # a stream of 100 requests, each answered once
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i in range(100):
        row = tc.InferInput("features", [1, 30], "FP32")
        row.set_data_from_numpy(data["features"][i % len(data["features"])][None, :])
        client.async_stream_infer("breast_cancer", [row], request_id=f"s{i}")
    seen: dict[str, float] = {}
    errors = 0
    for _ in range(100):
        result, error = answers.get(timeout=60)
        if error is not None:
            errors += 1
            continue
        seen[result.get_response().id] = float(result.as_numpy("probabilities")[0, 1])
    client.stop_stream()
    report["stream_ids"] = sorted(seen)
    report["stream_errors"] = errors
    outputs["stream_benign"] = np.array([seen[f"s{i}"] for i in range(100)], dtype=np.float32)

    statistics = client.get_inference_statistics("breast_cancer", as_json=True)
    report["statistics"] = statistics
    report["index"] = client.get_model_repository_index(as_json=True)

    # the repository extension's load and unload
    client.unload_model("add")
    report["unloaded_ready"] = client.is_model_ready("add")
    report["unloaded_index"] = [m for m in client.get_model_repository_index(as_json=True)["models"]
                                if m["name"] == "add"]
    report["unloaded_infer_code"] = code_of(lambda: client.infer("add", [a, b], model_version="1"))
    client.load_model("add")
    report["loaded_ready"] = client.is_model_ready("add")
    outputs["reloaded_add_sum"] = client.infer("add", [a, b], model_version="1").as_numpy("sum")
    report["load_corrupt_code"] = code_of(lambda: client.load_model("corrupt"))
    report["load_absent_code"] = code_of(lambda: client.load_model("absent"))
    report["load_config_code"] = code_of(lambda: client.load_model("add", config='{"max_batch_size": 4}'))
    report["still_ready"] = client.is_model_ready("breast_cancer")
    np.savez(out_path, **outputs)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
