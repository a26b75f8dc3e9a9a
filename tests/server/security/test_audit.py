"""The audit log: one line per prediction, batch item and feedback, refused calls included; identities hashed under
the configured key; never inputs, outputs or subject ids; rotated by size without losing a line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import running_app
from vigil.clients import AsyncClient, Unauthenticated
from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.settings import SecuritySettings
from vigil.telemetry.quality.outcomes import subject_hash

TOKEN = "clinic-a-token-0123456789"
KEY = "audit-key-" + "x" * 22
ROWS = np.array([[17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053,
                  8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019.0,
                  0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189]], dtype=np.float32)


def read_lines(folder: Path, stem: str = "audit.jsonl") -> list[dict[str, object]]:
    files = sorted(folder.glob(stem + "*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    return [json.loads(line) for path in files for line in path.read_text().splitlines()]


async def test_every_prediction_item_and_feedback_leaves_one_line(model_repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    security = SecuritySettings(tokens={"clinic-a": TOKEN})  # type: ignore[dict-item]
    async with running_app(model_repo, security=security, audit={"file": path, "identity_hash_key": KEY}) as app:
        target = f"127.0.0.1:{app.grpc_port}"
        async with AsyncClient(target, timeout=10, token=TOKEN) as client:
            predicted = await client.predict("breast_cancer", ROWS)
            receipt = await client.feedback(predicted.request_id, ["malignant"], subject_id="patient-4711")
            assert receipt.request_id == predicted.request_id
            with pytest.raises(Exception, match="past the 30-day retention period|not found"):
                await client.feedback("0" * 32, ["benign"])
        async with grpc.aio.insecure_channel(target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            batch = pb.BatchPredictRequest(requests=[
                pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", ROWS)]),
                pb.PredictRequest(model_name="no_such_model", inputs=[from_array("features", ROWS)]),
                pb.PredictRequest(model_name="breast_cancer", model_version=1, inputs=[from_array("features", ROWS)]),
            ])
            answer = await stub.BatchPredict(batch, metadata=(("authorization", f"Bearer {TOKEN}"),))
            assert [r.status.code for r in answer.results] == [0, grpc.StatusCode.NOT_FOUND.value[0], 0]
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Predict(pb.PredictRequest(model_name="breast_cancer"),
                                   metadata=(("authorization", f"Bearer {TOKEN}"),))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Predict(pb.PredictRequest(model_name="breast_cancer",
                                                     inputs=[from_array("features", ROWS)]))
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        async with AsyncClient(target, timeout=10) as anonymous:
            with pytest.raises(Unauthenticated):  # the metadata call it makes first is refused (and not audited)
                await anonymous.predict("breast_cancer", ROWS)
    lines = read_lines(tmp_path)
    assert [(line["method"], line["status"]) for line in lines] == [
        ("Predict", "OK"), ("Feedback", "OK"), ("Feedback", "NOT_FOUND"),
        ("BatchPredict", "OK"), ("BatchPredict", "NOT_FOUND"), ("BatchPredict", "OK"),
        ("Predict", "INVALID_ARGUMENT"), ("Predict", "UNAUTHENTICATED"),
    ]
    clinic, nobody = subject_hash(KEY.encode(), "clinic-a"), subject_hash(KEY.encode(), "unauthenticated")
    assert [line["identity"] for line in lines] == [clinic] * 7 + [nobody]
    first, feedback = lines[0], lines[1]
    assert first["request_id"] == predicted.request_id and feedback["request_id"] == predicted.request_id
    assert first["model"] == "breast_cancer" and first["version"] == "1" and feedback["model"] == "breast_cancer"
    assert re.fullmatch(r"[0-9a-f]{32}", str(first["trace_id"]))
    assert isinstance(first["latency_ms"], float) and first["latency_ms"] > 0
    assert first["peer"] == "127.0.0.1"
    assert [line.get("item") for line in lines[3:6]] == [0, 1, 2]
    assert lines[4]["model"] == "no_such_model" and "request_id" not in lines[4]
    text = path.read_text()
    for secret in ("patient-4711", "clinic-a", TOKEN, "17.99", "malignant", "benign", "probabilit"):
        assert secret not in text, secret  # no clear identities, subject ids, inputs or outputs


async def test_audit_file_rotates_by_size_and_keeps_every_line(model_repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    calls = 60
    async with running_app(model_repo, audit={"file": path, "max_bytes": 2048, "backup_count": 100}) as app:
        async with AsyncClient(f"127.0.0.1:{app.grpc_port}", timeout=10) as client:
            ids = [(await client.predict("breast_cancer", ROWS)).request_id for _ in range(calls)]
    files = list(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 3
    assert all(f.stat().st_size <= 2048 for f in files)
    lines = read_lines(tmp_path)
    assert [line["request_id"] for line in lines] == ids  # oldest file first: every line, in order


async def test_model_loads_and_unloads_are_audited(model_repo: Path, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    async with running_app(model_repo, audit={"file": path}) as app:
        async with AsyncClient(f"127.0.0.1:{app.grpc_port}", timeout=30) as client:
            await client.unload_model("identity_int8")
            await client.load_model("identity_int8")
    lines = read_lines(tmp_path)
    assert [(line["method"], line["model"], line["status"]) for line in lines] == [
        ("UnloadModel", "identity_int8", "OK"), ("LoadModel", "identity_int8", "OK")]


async def test_an_audit_line_carries_the_callers_trace_when_nothing_is_exported(model_repo: Path,
                                                                                tmp_path: Path) -> None:
    """Tracing on with no exporter: the caller's `traceparent` is read only when a line is written, and is the
    line's trace; a call without one gets a trace id of its own, the same on every line of that call."""
    path = tmp_path / "audit.jsonl"
    sent = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with running_app(model_repo, audit={"file": path}) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            request = pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", ROWS)])
            await stub.Predict(request, metadata=(("traceparent", f"00-{sent}-00f067aa0ba902b7-01"),))
            await stub.Predict(request)
    continued, own = read_lines(tmp_path)
    assert continued["trace_id"] == sent
    assert re.fullmatch(r"[0-9a-f]{32}", str(own["trace_id"])) and own["trace_id"] != sent
