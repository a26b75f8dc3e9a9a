"""OTLP exporters that report an outage once (and its end once), instead of on every failed export."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import Counter as CounterInstrument
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from vigil.telemetry.metrics.aggregates import Aggregates, AggregateSource

logger = logging.getLogger(__name__)

QUIET_LOGGERS = ("opentelemetry.exporter.otlp.proto.grpc.exporter",
                 "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                 "opentelemetry.exporter.otlp.proto.grpc.metric_exporter")
"""The SDK's exporters warn on every failed attempt; these wrappers report outages instead."""


class _Outage:
    def __init__(self, signal: str) -> None:
        self.signal = signal
        self.down = False
        self.dropped = 0

    def note(self, ok: bool, count: int) -> None:
        if ok and self.down:
            self.down = False
            logger.warning("OTLP %s export recovered after dropping %d items", self.signal, self.dropped)
        elif not ok:
            self.dropped += count
            if not self.down:
                self.down = True
                self.dropped = count
                logger.warning("OTLP %s export is failing (collector unreachable?); dropping %s until it recovers",
                               self.signal, self.signal)


class OutageReportingSpanExporter(SpanExporter):
    """Wraps a span exporter; failures never raise into the span processor."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self.outage = _Outage("traces")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        self.outage.note(result is SpanExportResult.SUCCESS, len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


class OutageReportingMetricExporter(MetricExporter):
    """Wraps a metric exporter, keeping its temporality and aggregation preferences."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality,
                         preferred_aggregation=inner._preferred_aggregation)
        self._inner = inner
        self.outage = _Outage("metrics")

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            result = MetricExportResult.FAILURE
        self.outage.note(result is MetricExportResult.SUCCESS, 1)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class AggregatesExportingReader(PeriodicExportingMetricReader):
    """The SDK's periodic reader, exporting Vigil's own aggregates (once `include`d) with the SDK's instruments;
    as deltas when the exporter prefers them (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE)."""

    def __init__(self, exporter: MetricExporter) -> None:
        super().__init__(exporter)
        preferred = exporter._preferred_temporality or {}
        self._delta = {"delta_counters": preferred.get(CounterInstrument) is AggregationTemporality.DELTA,
                       "delta_histograms": preferred.get(HistogramInstrument) is AggregationTemporality.DELTA}
        self._source: AggregateSource | None = None

    def include(self, aggregates: Aggregates, resource: Resource) -> None:
        self._source = AggregateSource(aggregates, resource, **self._delta)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        if self._source is not None:
            metrics_data = self._source.merge(metrics_data)
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)


def quiet_sdk_exporter_logs() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
