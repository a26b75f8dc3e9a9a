"""The benchmark's OTLP sink answers both export services, so the servers under test export successfully."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bench.run import Server


def test_sink_accepts_trace_and_metric_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = Server(tmp_path, script="otlp_sink.py")
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{sink.target}")
        keep = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(keep))
        provider.get_tracer("t").start_span("s").end()
        assert OTLPSpanExporter().export(keep.get_finished_spans()) is SpanExportResult.SUCCESS
        reader = InMemoryMetricReader()
        MeterProvider(metric_readers=[reader]).get_meter("t").create_counter("c").add(1)
        data = reader.get_metrics_data()
        assert data is not None
        assert OTLPMetricExporter().export(data) is MetricExportResult.SUCCESS
    finally:
        sink.stop()
