"""The hand-written OTLP span encoding decodes to exactly the message the SDK's own encoder builds."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from vigil.telemetry.export.span_encoding import SpanEncoder


def varied_spans() -> list[ReadableSpan]:
    """Spans covering every field the encoder writes: kinds, parents (local and remote), trace state, links,
    events, every attribute type, statuses, two tracers and two resources."""
    collect = InMemorySpanExporter()
    providers = [TracerProvider(resource=Resource.create({"service.name": name, "n": i, "ok": True, "f": 1.5}))
                 for i, name in enumerate(("vigil", "other"))]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(collect))
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x1"), ("other", "y")]))
    for provider in providers:
        for tracer in (provider.get_tracer("vigil"), provider.get_tracer("lib", "2.0", schema_url="https://s")):
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
            server = tracer.start_span("vigil.v1.Inference/Predict", context=parent, kind=SpanKind.SERVER,
                                       attributes={"rpc.system": "grpc", "rpc.grpc.status_code": 0, "neg": -7,
                                                   "ratio": 0.25, "flag": False, "tags": ["a", "b"],
                                                   "ints": [1, 2], "empty": "", "big": 2**62, "unicode": "é✓"})
            server.add_event("retry", {"attempt": 2, "rpc.system": "grpc"})  # a pair the span has too
            server.add_event("bare")
            server.set_status(Status(StatusCode.ERROR, "INVALID_ARGUMENT: bad shape"))
            child = tracer.start_span("inference", context=trace.set_span_in_context(server),
                                      links=[Link(server.get_span_context(), {"why": "batch", "rpc.system": "grpc"}),
                                             Link(remote)])
            child.set_status(Status(StatusCode.OK))
            child.end()
            tracer.start_span("", kind=SpanKind.CLIENT).end()
            for kind in (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.INTERNAL):
                tracer.start_span(f"k{kind.value}", kind=kind).end()
            server.end()
    return list(collect.get_finished_spans())


def test_encoding_matches_the_sdk_encoder_field_for_field() -> None:
    spans = varied_spans()
    assert len(spans) > 20
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert ours == encode_spans(spans)


def test_cached_attribute_pairs_encode_the_same_across_batches() -> None:
    spans = varied_spans()
    encoder = SpanEncoder()
    first = encoder.encode(spans[:7])
    assert encoder.encode(spans[:7]) == first
    assert ExportTraceServiceRequest.FromString(encoder.encode(spans[7:])) == encode_spans(spans[7:])


def test_an_empty_batch_is_an_empty_request() -> None:
    assert SpanEncoder().encode([]) == b""
    assert ExportTraceServiceRequest.FromString(b"") == encode_spans([])
