"""Head sampling through OTEL_TRACES_SAMPLER, with errors and slow calls exported whatever it decided."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import make_settings
from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.app import App


def request(model: str, x: np.ndarray, name: str) -> pb.PredictRequest:
    return pb.PredictRequest(model_name=model, inputs=[from_array(name, x)])


async def test_unsampled_calls_export_only_errors_and_slow_ones(monkeypatch: pytest.MonkeyPatch,
                                                               model_repo: Path) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    exporter = InMemorySpanExporter()
    app = App(make_settings(model_repo, telemetry={"slow_request_seconds": 0.015}), span_exporters=[exporter])
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            for _ in range(20):
                await stub.Predict(request("breast_cancer", np.zeros((1, 30), np.float32), "features"))
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Predict(request("breast_cancer", np.zeros((1, 3), np.float32), "features"))
            await stub.Predict(request("slow", np.ones((1000, 256), np.float32), "x"))  # tens of ms
    finally:
        await app.stop(grace=0)
    servers = [s for s in exporter.get_finished_spans() if s.name == "vigil.v1.Inference/Predict"]
    assert len(servers) == 2, [s.attributes.get("vigil.model") for s in servers]
    failed, slow = sorted(servers, key=lambda s: s.attributes["vigil.model"])
    assert failed.status.status_code.name == "ERROR" and failed.attributes["vigil.model"] == "breast_cancer"
    assert slow.attributes["vigil.model"] == "slow" and slow.end_time - slow.start_time >= 15_000_000
    assert failed.attributes["vigil.trace.kept"] == "error" and slow.attributes["vigil.trace.kept"] == "slow"
    assert any(e.name == "exception" for e in failed.events) and failed.attributes["rpc.grpc.status_code"] == 3
    kept = {s.name for s in exporter.get_finished_spans() if s.context.trace_id == slow.context.trace_id}
    assert kept == {"vigil.v1.Inference/Predict", "validate"}  # unsampled calls' stages are never recorded
    assert all(s.context.trace_flags.sampled for s in exporter.get_finished_spans())


async def test_parent_based_sampling_follows_the_caller(model_repo: Path) -> None:
    exporter = InMemorySpanExporter()
    app = App(make_settings(model_repo), span_exporters=[exporter])
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            x = request("breast_cancer", np.zeros((1, 30), np.float32), "features")
            await stub.Predict(x, metadata=(("traceparent", f"00-{'a' * 32}-{'b' * 16}-00"),))  # not sampled
            await stub.Predict(x, metadata=(("traceparent", f"00-{'c' * 32}-{'d' * 16}-01"),))  # sampled
    finally:
        await app.stop(grace=0)
    traces = {format(s.context.trace_id, "032x") for s in exporter.get_finished_spans()}
    assert "c" * 32 in traces and "a" * 32 not in traces


async def test_service_name_comes_from_the_standard_variable(monkeypatch: pytest.MonkeyPatch,
                                                             model_repo: Path) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "triage-classifier")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    app = App(make_settings(model_repo))
    assert app.telemetry is not None
    resource = app.telemetry.tracer_provider.resource.attributes
    assert resource["service.name"] == "triage-classifier" and resource["deployment.environment"] == "test"
    app.telemetry.shutdown()
