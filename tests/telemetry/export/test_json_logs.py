"""JSON log lines carry trace, span and request ids, and the model, when they exist."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from vigil.telemetry.calls.context import CallRecord, current_call
from vigil.telemetry.export.json_logs import JsonFormatter


def line(record: logging.LogRecord) -> dict[str, object]:
    return json.loads(JsonFormatter().format(record))


def make_record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("server.test", logging.WARNING, __file__, 1, message, (), exc_info)


def test_outside_a_call_only_the_basics() -> None:
    out = line(make_record("plain ü"))
    assert out["message"] == "plain ü" and out["level"] == "WARNING" and out["logger"] == "server.test"
    assert set(out) == {"time", "level", "logger", "message"}


def test_inside_a_call_the_ids_and_the_model() -> None:
    tracer = TracerProvider().get_tracer("test")
    token = current_call.set(CallRecord(method="Predict", model="m", version="2", request_id="r" * 32))
    try:
        with tracer.start_as_current_span("call") as span:
            try:
                raise ValueError("boom")
            except ValueError as exc:
                out = line(make_record('quote " and newline \n', exc))
    finally:
        current_call.reset(token)
    assert out["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert out["span_id"] == format(span.get_span_context().span_id, "016x")
    assert out["request_id"] == "r" * 32 and out["model"] == "m" and out["version"] == "2"
    assert out["message"] == 'quote " and newline \n' and "ValueError: boom" in str(out["exception"])
