"""The one batch hook: an inference span linked to every request it served, queue spans, and batch metrics."""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.trace import Link, Status, StatusCode

from vigil.telemetry.calls.spans import UNSET, SpanWriter
from vigil.telemetry.metrics.instruments import BATCH_SIZE, Instruments

logger = logging.getLogger(__name__)

_FAILED = Status(StatusCode.ERROR, "the ONNX Runtime run failed")


class BatchTelemetry:
    """Subscribe `on_batch` to a batcher: `batcher.add_hook(BatchTelemetry(instruments, stages).on_batch)`."""

    def __init__(self, instruments: Instruments, stages: SpanWriter | None) -> None:
        self._instruments = instruments
        self._stages = stages

    def on_batch(self, record: Any) -> None:
        """Record one ONNX Runtime run (a `vigil.server.batching.batcher.BatchRecord`); never raises."""
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
        if self._stages is None:
            return
        # Only sampled calls have their stages traced (see telemetry.sampling).
        sampled = [(c, wait) for c, wait in zip(record.span_contexts, record.queue_seconds, strict=True)
                   if c is not None and c.trace_flags.sampled]
        if not sampled:
            return
        version = str(record.version)
        self._stages.write(
            "inference", parent=sampled[0][0], start_ns=record.started_ns, end_ns=record.ended_ns,
            attributes={"vigil.model": record.model, "vigil.model.version": version, BATCH_SIZE.name: record.rows,
                        "vigil.batch.requests": len(record.request_ids),
                        "vigil.execution_provider": record.execution_provider},
            links=[Link(c) for c, _ in sampled], status=_FAILED if record.failed else UNSET)
        for context, wait in sampled:
            self._stages.write("queue", parent=context, start_ns=record.started_ns - int(wait * 1e9),
                               end_ns=record.started_ns,
                               attributes={"vigil.model": record.model, "vigil.model.version": version})
