"""The one batch hook: an inference span linked to every request it served, queue spans, and batch metrics."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, Status, StatusCode

from telemetry.instruments import Instruments

logger = logging.getLogger(__name__)


class BatchTelemetry:
    """Subscribe `on_batch` to a batcher: `batcher.add_hook(BatchTelemetry(tracer, instruments).on_batch)`."""

    def __init__(self, tracer: trace.Tracer, instruments: Instruments) -> None:
        self._tracer = tracer
        self._instruments = instruments

    def on_batch(self, record: Any) -> None:
        """Record one ONNX Runtime run (a `server.batcher.BatchRecord`); never raises."""
        try:
            self._record(record)
        except Exception:
            logger.exception("recording batch telemetry failed")

    def _record(self, record: Any) -> None:
        labels = (record.model, str(record.version))
        instruments = self._instruments
        instruments.batch_size.record(record.rows, labels)
        instruments.queue_duration.record_many(record.queue_seconds, labels)
        if not record.failed:
            instruments.inference_duration.record(record.compute_seconds, labels)
        # Only sampled calls have their stages traced (see telemetry.sampling).
        contexts = [c for c in record.span_contexts if c is not None and c.is_valid and c.trace_flags.sampled]
        if not contexts:
            return
        attributes = {"vigil.model": record.model, "vigil.model.version": record.version,
                      "vigil.batch.size": record.rows, "vigil.batch.requests": len(record.request_ids),
                      "vigil.execution_provider": record.execution_provider}
        parent = trace.set_span_in_context(NonRecordingSpan(contexts[0]))
        span = self._tracer.start_span("inference", context=parent, kind=SpanKind.INTERNAL, attributes=attributes,
                                       links=[Link(c) for c in contexts], start_time=record.started_ns)
        if record.failed:
            span.set_status(Status(StatusCode.ERROR, "the ONNX Runtime run failed"))
        span.end(record.ended_ns)
        for context, wait in zip(record.span_contexts, record.queue_seconds, strict=True):
            if context is None or not context.is_valid or not context.trace_flags.sampled:
                continue
            queue = self._tracer.start_span(
                "queue", context=trace.set_span_in_context(NonRecordingSpan(context)),
                attributes={"vigil.model": record.model, "vigil.model.version": record.version},
                start_time=record.started_ns - int(wait * 1e9))
            queue.end(record.started_ns)
