"""Spans leave the serving process as records and are exported by a process of their own: a killed exporter is
started again and counted, a stuck or dead one costs dropped (and counted) spans, never a blocked call."""

from __future__ import annotations

import asyncio
import marshal
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tests.conftest import running_app
from tests.telemetry.export.otlp_receiver import OtlpReceiver
from tests.telemetry.export.test_otlp import attributes, predict, rows
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.telemetry.export.span_process import ExporterProcess
from vigil.telemetry.export.span_records import SAMPLED, record, to_span
from vigil.telemetry.export.span_records import frame as frame_of


async def server_spans(receiver: OtlpReceiver, count: int, timeout: float = 15.0) -> list[object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [s for s in receiver.spans() if s.name == "vigil.v1.Inference/Predict"]
        if len(spans) >= count:
            return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} server spans did not arrive; {len(spans)} did")


def test_a_record_becomes_the_same_span_again() -> None:
    parent = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
                         trace_flags=TraceFlags(1))
    context = SpanContext(parent.trace_id, 0x1234, is_remote=False, trace_flags=TraceFlags(1))
    linked = SpanContext(parent.trace_id, 0x5678, is_remote=False, trace_flags=TraceFlags(1))
    values = record("vigil.v1.Inference/Predict", context.trace_id, context.span_id, 1, "", parent, 10, 20,
                    {"rpc.method": "Predict", "n": 2},
                    [Link(linked)], Status(StatusCode.ERROR, "INVALID_ARGUMENT: bad"), SpanKind.SERVER,
                    [Event("exception", {"exception.type": "InvalidInput"}, timestamp=15)])
    payload = frame_of(SAMPLED, [values])
    assert marshal.loads(payload[4:]) == (SAMPLED, [values])  # the record crosses the pipe as it is
    span = to_span(values, Resource({"service.name": "vigil"}), InstrumentationScope("vigil"))
    assert span.name == "vigil.v1.Inference/Predict" and span.kind is SpanKind.SERVER
    assert span.context.trace_id == parent.trace_id and span.context.span_id == 0x1234
    assert span.parent is not None and span.parent.span_id == parent.span_id and span.parent.is_remote
    assert (span.start_time, span.end_time) == (10, 20) and dict(span.attributes) == {"rpc.method": "Predict", "n": 2}
    assert [link.context.span_id for link in span.links] == [0x5678]
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "INVALID_ARGUMENT: bad"
    assert [(e.name, e.timestamp) for e in span.events] == [("exception", 15)]
    assert span.resource.attributes["service.name"] == "vigil"


async def test_a_killed_exporter_is_started_again_and_counted(receiver: OtlpReceiver, model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        process = app.telemetry.span_process
        assert process is not None and process.pid is not None and process.pid != os.getpid()
        await stub.Predict(predict("breast_cancer", rows()))
        [first] = await server_spans(receiver, 1)
        assert attributes(first)["vigil.model"] == "breast_cancer"
        old = process.pid
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process.restarts == 0 and time.monotonic() < deadline:
            await stub.Predict(predict("breast_cancer", rows()))  # calls go on while the exporter is down
            await asyncio.sleep(0.05)
        assert process.restarts == 1 and process.pid != old
        await stub.Predict(predict("breast_cancer", rows()))
        spans = await server_spans(receiver, 2)
        assert len({s.span_id for s in spans}) == len(spans)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{app.http_port}/metrics") as page:
            text = await page.text()
        assert "vigil_span_exporter_restarts_total 1.0" in text
        assert "vigil_spans_dropped_total" in text


async def test_an_exporter_that_takes_nothing_costs_dropped_spans_not_blocked_calls() -> None:
    """A process that never reads its pipe: the buffer and the pipe fill, the rest is dropped and counted, adding
    a span stays instant, and stopping gives up on the process after its timeout."""
    stuck = (sys.executable, "-c", "import time; time.sleep(60)")
    process = ExporterProcess(Resource({}), max_buffered=100, flush_seconds=0.01, command=stuck)
    process.start()
    try:
        parent = SpanContext(1, 1, is_remote=False, trace_flags=TraceFlags(1))
        writer = process.writer(SAMPLED)
        started = time.perf_counter()
        for i in range(20_000):
            writer.write("queue", parent=parent, start_ns=i, end_ns=i + 1, attributes={"vigil.model": "m" * 200})
        elapsed = time.perf_counter() - started
        assert elapsed < 5.0, f"20,000 spans took {elapsed:.1f}s to hand over"
        await asyncio.sleep(0.2)
        assert process.dropped > 0 and process.dropped + process.sent <= 20_000
    finally:
        started = time.monotonic()
        process.stop(timeout=0.5)
        assert time.monotonic() - started < 5.0
