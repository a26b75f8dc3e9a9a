"""Builds the OpenTelemetry tracer and meter providers: the only module that imports the SDK's wiring.

Standard `OTEL_*` variables are read by the SDK itself (endpoint, service name, resource attributes, sampler,
batch span processor and metric export settings). OTLP export is on when an endpoint is configured; spans are then
exported by a process of their own (`span_process`), which inherits the same variables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, Sampler

from vigil.telemetry.calls.spans import CallTracing, FanOut, SpanWriter
from vigil.telemetry.export.exporters import (
    AggregatesExportingReader,
    OutageReportingMetricExporter,
    quiet_sdk_exporter_logs,
)
from vigil.telemetry.export.prometheus import PrometheusCollector, PrometheusReader
from vigil.telemetry.export.span_process import ExporterProcess
from vigil.telemetry.export.span_records import KEPT, SAMPLED
from vigil.telemetry.metrics.aggregates import Aggregates

logger = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                      "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")


@dataclass
class TelemetryProviders:
    """What the server records into, and the `/metrics` collector over the same instruments."""

    tracer_provider: TracerProvider
    keep_processors: Sequence[SpanProcessor]
    """Export everything: the spans of unsampled calls that failed or were slow."""
    meter_provider: MeterProvider
    prometheus: PrometheusCollector
    resource: Resource
    readers: Sequence[PrometheusReader | AggregatesExportingReader]
    """The readers that export Vigil's own aggregates along with the SDK's instruments."""
    call_tracing: CallTracing
    """Sampling decisions for calls, and where their spans are written."""
    span_process: ExporterProcess | None = None
    """The process exporting spans over OTLP, when an endpoint is configured."""

    def include(self, aggregates: Aggregates) -> None:
        """Export `aggregates` through every metric output (the `/metrics` page and OTLP)."""
        for reader in self.readers:
            reader.include(aggregates, self.resource)

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        """Flush and stop exporters; never raises. Every span queue flushes before any stops, because the queues
        share exporters and stopping one stops the exporter for the others. Flushes wait `timeout_seconds` at most
        each (an unreachable collector must not hold the process)."""
        keep = self.keep_processors
        millis = int(timeout_seconds * 1000)
        steps: list[Callable[[], object]] = [
            lambda: self.tracer_provider.force_flush(millis), *(partial(p.force_flush, millis) for p in keep),
            self.tracer_provider.shutdown, *(p.shutdown for p in keep),
            lambda: self.meter_provider.shutdown(timeout_millis=millis)]
        if self.span_process is not None:
            steps.insert(0, partial(self.span_process.stop, timeout_seconds))
        for shut in steps:
            try:
                shut()
            except Exception:
                logger.exception("telemetry shutdown failed")


def otlp_enabled() -> bool:
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def otlp_protocol(signal: str) -> str:
    """The OTLP transport for `signal` ("traces" or "metrics"), as the standard variables choose it: "grpc" (the
    default) or "http/protobuf"; "" for one the SDK has no exporter for (http/json), which turns that export off."""
    protocol = (os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip().lower()
    if protocol in ("grpc", "http/protobuf"):
        return protocol
    logger.error("OTLP protocol %r is not supported for %s (use grpc or http/protobuf); %s are not exported",
                 protocol, signal, signal)
    return ""


def otlp_metric_exporter() -> MetricExporter | None:
    """The OTLP metric exporter for the configured transport."""
    protocol = otlp_protocol("metrics")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

        return HttpMetricExporter()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    return None


def default_sampler() -> Sampler:
    """The SDK's sampler from OTEL_TRACES_SAMPLER when set; otherwise parent-based ratio (OTEL_TRACES_SAMPLER_ARG,
    default 1.0)."""
    from opentelemetry.sdk.trace import sampling

    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return sampling._get_from_env_or_default()
    ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    return ParentBasedTraceIdRatio(ratio)


def build_providers(
    *,
    service_version: str,
    service_instance_id: str = "",
    span_exporters: Sequence[SpanExporter] = (),
    metric_readers: Sequence[MetricReader] = (),
    sampler: Sampler | None = None,
) -> TelemetryProviders:
    """Providers with batch span processing only: exporters passed in (tests), plus OTLP when configured.

    `service_instance_id` names this process among those reporting as the same service (the workers of a host,
    the replicas of a deployment): without it their cumulative metrics would be one series written by several
    processes. It wins over one set in OTEL_RESOURCE_ATTRIBUTES, which every process of a host would share."""
    attributes: dict[str, str] = {SERVICE_VERSION: service_version}
    if service_instance_id:
        attributes[SERVICE_INSTANCE_ID] = service_instance_id
    resource = Resource.create(attributes)
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "vigil"}))  # OTEL_SERVICE_NAME was not set
    exporters = list(span_exporters)
    readers = list(metric_readers)
    span_process = None
    if otlp_enabled():
        quiet_sdk_exporter_logs()
        if otlp_protocol("traces"):  # spans are built, encoded and sent in a process of their own
            span_process = ExporterProcess(resource)
            span_process.start()
        if (metric_exporter := otlp_metric_exporter()) is not None:
            readers.append(AggregatesExportingReader(OutageReportingMetricExporter(metric_exporter)))
    # Shut down by the server within its own bound (`TelemetryProviders.shutdown` in a daemon thread), never by the
    # SDK's exit handlers, which wait on an unreachable collector for as long as its exporters retry.
    tracer_provider = TracerProvider(resource=resource, sampler=sampler or default_sampler(), shutdown_on_exit=False)
    processors = [BatchSpanProcessor(exporter) for exporter in exporters]
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    # One exporter, two queues: the kept spans never wait behind (or crowd out) the sampled ones.
    keep_processors = [BatchSpanProcessor(exporter) for exporter in exporters]
    sampled: list[SpanWriter | Any] = [SpanWriter(processors, resource)] if processors else []
    kept: list[SpanWriter | Any] = [SpanWriter(keep_processors, resource)] if keep_processors else []
    if span_process is not None:
        sampled.append(span_process.writer(SAMPLED))
        kept.append(span_process.writer(KEPT))
    tracing = CallTracing(tracer_provider.sampler, _one(sampled), _one(kept), exporting=bool(sampled))
    prometheus_reader = PrometheusReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[prometheus_reader, *readers],
                                   shutdown_on_exit=False)
    own: list[PrometheusReader | AggregatesExportingReader] = [
        prometheus_reader, *(r for r in readers if isinstance(r, AggregatesExportingReader))]
    return TelemetryProviders(tracer_provider, keep_processors, meter_provider, PrometheusCollector(prometheus_reader),
                              resource, own, tracing, span_process)


def _one(writers: list[Any]) -> Any:
    """The writer, or a fan-out over several (none: a fan-out that writes nowhere)."""
    return writers[0] if len(writers) == 1 else FanOut(writers)
