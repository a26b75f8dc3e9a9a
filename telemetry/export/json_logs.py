"""JSON log lines correlated with traces: time, level, logger, message, trace and span ids, request, model, and
the `fields` a record carries (`extra={"fields": {...}}`)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from vigil.telemetry.calls.context import current_call, trace_of


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ids of the current span and call where there are some."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = current_call.get()
        span = trace_of(call)
        if span is not None and span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        if call is not None:
            if call.request_id:
                line["request_id"] = call.request_id
            if call.model:
                line["model"] = call.model
                line["version"] = call.version
        fields = getattr(record, "fields", None)  # logger.info(..., extra={"fields": {...}})
        if isinstance(fields, dict):
            line.update((k, v) for k, v in fields.items() if k not in line)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
