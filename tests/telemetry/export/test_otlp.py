"""Traces and metrics reach a real OTLP receiver: the caller's trace continued, RPC attributes, the batch span
linked to every request it served, error status, metric names and counts; exemplars name exported traces."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest

from tests.conftest import running_app
from tests.telemetry.export.otlp_receiver import OtlpHttpReceiver, OtlpReceiver
from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.app import App

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def attributes(span: Any) -> dict[str, Any]:
    values = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        values[a.key] = getattr(a.value, kind) if kind else None
    return values


def rows(n: int = 2) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 30)).astype(np.float32) * 10 + 15


def predict(model: str, x: np.ndarray, name: str = "features") -> pb.PredictRequest:
    return pb.PredictRequest(model_name=model, inputs=[from_array(name, x)])


async def test_trace_continues_the_callers_trace_with_rpc_attributes(receiver: OtlpReceiver, model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        metadata = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("baggage", "tenant=clinic-a"))
        await stub.Predict(predict("breast_cancer", rows()), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Predict(predict("breast_cancer", rows()[:, :5]),
                               metadata=(("traceparent", f"00-{'1' * 32}-{PARENT_ID}-01"),))
    spans = receiver.spans()
    ours = [s for s in spans if s.trace_id.hex() == TRACE_ID]
    server = next(s for s in ours if s.name == "vigil.v1.Inference/Predict")
    assert server.parent_span_id.hex() == PARENT_ID and server.kind == 2  # SPAN_KIND_SERVER
    attrs = attributes(server)
    assert attrs["rpc.system"] == "grpc" and attrs["rpc.service"] == "vigil.v1.Inference"
    assert attrs["rpc.method"] == "Predict" and attrs["rpc.grpc.status_code"] == 0
    assert attrs["vigil.model"] == "breast_cancer" and attrs["vigil.model.version"] == "1"
    assert attrs["network.peer.address"] == "127.0.0.1" and len(attrs["vigil.request.id"]) == 32
    assert attrs["vigil.prediction.rows"] == 2 and attrs["vigil.prediction.label"] in ("benign", "malignant")
    assert 0.5 <= attrs["vigil.prediction.confidence.min"] <= 1.0
    children = {s.name: s for s in ours if s.parent_span_id == server.span_id}
    assert set(children) == {"validate", "queue", "inference"}
    inference = attributes(children["inference"])
    assert inference["vigil.execution_provider"] == "CPUExecutionProvider" and inference["vigil.batch.size"] == 2
    assert [link.span_id for link in children["inference"].links] == [server.span_id]

    failed = next(s for s in spans if s.trace_id.hex() == "1" * 32 and s.name == "vigil.v1.Inference/Predict")
    assert failed.status.code == 2 and "INVALID_ARGUMENT" in failed.status.message  # STATUS_CODE_ERROR
    assert attributes(failed)["rpc.grpc.status_code"] == 3
    assert any(e.name == "exception" for e in failed.events)
    assert {"service.name": "vigil"}.items() <= receiver.resources()[0].items()


async def test_batch_span_links_every_request_it_served(receiver: OtlpReceiver, model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        batcher = app.repository.resolve("slow", 0).batcher
        assert batcher is not None
        blocker = stub.Predict(predict("slow", np.ones((1000, 256), np.float32), "x"))
        while batcher.in_flight == 0:
            await asyncio.sleep(0.001)
        ids = [f"{i + 1:032x}" for i in range(4)]
        small = [stub.Predict(predict("slow", np.ones((1, 256), np.float32), "x"),
                              metadata=(("traceparent", f"00-{t}-{PARENT_ID}-01"),)) for t in ids]
        await asyncio.gather(blocker, *small)
    spans = receiver.spans()
    servers = {s.trace_id.hex(): s for s in spans if s.name == "vigil.v1.Inference/Predict"}
    shared = [s for s in spans if s.name == "inference" and len(s.links) > 1]
    assert shared, "the queued requests did not share a run"
    linked = {(link.trace_id.hex(), link.span_id) for link in shared[0].links}
    assert linked <= {(t, servers[t].span_id) for t in ids}
    assert attributes(shared[0])["vigil.batch.size"] == len(linked)


async def test_metrics_arrive_with_names_and_counts(receiver: OtlpReceiver, model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        for _ in range(7):
            await stub.Predict(predict("breast_cancer", rows(3)))
    metrics = receiver.metrics()
    assert {"vigil.requests", "vigil.request.duration", "vigil.queue.duration", "vigil.inference.duration",
            "vigil.batch.size", "vigil.inference.rows", "vigil.queue.depth", "vigil.model.ready",
            "vigil.requests.in_flight", "process.cpu.time", "process.memory.usage"} <= set(metrics)
    def points(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted((a.key, a.value.string_value) for a in p.attributes)): p.as_int or p.as_double
                for p in metrics[name].sum.data_points}

    key = (("code", "OK"), ("method", "Predict"), ("model", "breast_cancer"), ("version", "1"))
    assert points("vigil.requests")[key] == 7 and metrics["vigil.requests"].sum.is_monotonic
    assert points("vigil.inference.rows")[(("model", "breast_cancer"), ("version", "1"))] == 21
    duration = metrics["vigil.request.duration"]
    assert duration.unit == "s" and sum(p.count for p in duration.histogram.data_points) >= 7


async def test_exemplar_on_metrics_names_an_exported_trace(receiver: OtlpReceiver, model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        for _ in range(5):
            await stub.Predict(predict("breast_cancer", rows()))
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{app.http_port}/metrics", headers={"Accept": "application/openmetrics-text"}) as r:
            page = await r.text()
    assert 'vigil_requests_total{code="OK",method="Predict",model="breast_cancer",version="1"} 5.0' in page
    exemplars = re.findall(r'vigil_request_duration_seconds_bucket\{[^}]*model="breast_cancer"[^}]*\} \S+ '
                           r'# \{span_id="([0-9a-f]{16})",trace_id="([0-9a-f]{32})"\}', page)
    assert exemplars
    exported = {(s.trace_id.hex(), s.span_id.hex()) for s in receiver.spans()}
    assert all((trace_id, span_id) in exported for span_id, trace_id in exemplars)


async def test_closed_collector_port_never_hurts_requests(monkeypatch: pytest.MonkeyPatch, model_repo: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")

    def rss() -> int:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = predict("breast_cancer", rows())
        for _ in range(500):  # warm up allocators and caches before measuring
            await stub.Predict(request)
        before = rss()
        for _ in range(10):
            responses = await asyncio.gather(*(stub.Predict(request) for _ in range(500)))
            assert all(r.model_name == "breast_cancer" for r in responses)
        grown = rss() - before
    assert grown < 64 * 1024 * 1024, f"memory grew {grown / 2**20:.1f} MiB over 5,000 calls"
    signals = [r.getMessage().split()[1] for r in caplog.records if "export is failing" in r.getMessage()]
    assert signals.count("traces") == 1 and signals.count("metrics") <= 1  # once per outage, not per call
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]


def test_app_without_telemetry_serves_and_exports_nothing(model_repo: Path) -> None:
    from tests.conftest import make_settings

    app = App(make_settings(model_repo, telemetry={"enabled": False}))
    assert app.telemetry is None and app._interceptor is None


async def test_spans_and_metrics_go_over_otlp_http_when_the_protocol_says_so(
        monkeypatch: pytest.MonkeyPatch, model_repo: Path) -> None:
    http = OtlpHttpReceiver()
    await http.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", http.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        async with running_app(model_repo) as app, \
                grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            for _ in range(3):
                await stub.Predict(predict("breast_cancer", rows()))
    finally:
        await http.stop()
    assert [s for s in http.spans() if s.name == "vigil.v1.Inference/Predict"]
    key = (("code", "OK"), ("method", "Predict"), ("model", "breast_cancer"), ("version", "1"))
    points = {tuple(sorted((a.key, a.value.string_value) for a in p.attributes)): p.as_int
              for p in http.metrics()["vigil.requests"].sum.data_points}
    assert points[key] == 3


async def test_every_process_exports_metrics_under_its_own_instance_id(receiver: OtlpReceiver,
                                                                       model_repo: Path) -> None:
    """Workers of one host (and replicas) report as one service: `service.instance.id` keeps their series apart."""
    async with running_app(model_repo) as one, running_app(model_repo) as other:
        for app in (one, other):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                await inference_pb2_grpc.InferenceStub(channel).Predict(predict("breast_cancer", rows(1)))
        wanted = {one.member_id, other.member_id}
        for _ in range(100):
            exported = {a.value.string_value for request in receiver.metric_requests
                        for r in request.resource_metrics for a in r.resource.attributes
                        if a.key == "service.instance.id"}
            if wanted <= exported:
                break
            await asyncio.sleep(0.1)
    assert wanted <= exported and one.member_id != other.member_id
