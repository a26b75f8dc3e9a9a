"""What the request path tells telemetry about the call it serves, through a context variable.

The interceptor opens a `CallRecord` for each call; the request path fills in the model, version and request id
it resolved and how long validation took. Telemetry reads it for metric labels, span attributes and log fields.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanContext


@dataclass(slots=True)
class CallRecord:
    """One gRPC call as telemetry sees it."""

    method: str
    model: str = ""
    version: str = ""
    request_id: str = ""
    validation_ns: tuple[int, int] | None = None
    """Wall-clock start and end of validation, in nanoseconds."""
    error: BaseException | None = None
    """The error the call failed with, before it became a gRPC status."""
    prediction: tuple[Sequence[str], Any] | None = None
    """A classifier's predicted label and its probability per row (read only when the call's span is written)."""
    identity: str = ""
    """Who called, once the call gate authenticated them."""
    items: list[CallItem] | None = None
    """BatchPredict and BatchFeedback: what each item resolved to and how it ended (for the audit log)."""
    audit_fields: dict[str, object] | None = None
    """More for the call's audit line (e.g. what an erasure removed); never inputs or clear subject ids."""
    span_context: SpanContext | None = None
    """The call's span context (an OpenTelemetry `SpanContext`): set when the call is sampled, or built by
    `trace_of` for its log and audit lines."""
    traced: bool = False
    """Tracing is on: a call that exports nothing still gets a trace id once a log or audit line asks for one."""
    metadata: Callable[[], Any] | None = None
    """Tracing on and nothing exported: the call's `invocation_metadata`, read only when a log or audit line asks
    for the trace the caller may have sent."""
    call_span: Any = None
    """The call's `CallSpan` (tracing on and exporting), whose context `trace_of` builds when asked."""


@dataclass(frozen=True)
class CallItem:
    """One item of a batch call: its request id, model and version where known, and its error if it failed."""

    request_id: str
    model: str
    version: str
    error: BaseException | None = None


current_call: ContextVar[CallRecord | None] = ContextVar("vigil_current_call", default=None)


def trace_of(record: CallRecord | None) -> SpanContext | None:
    """The span context for a log or audit line: the current OpenTelemetry span's, else the call's own, or (tracing
    on, nothing exported) one made up once, so the lines of one call share a trace id. None with tracing off."""
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        return current
    if record is None:
        return None
    if record.span_context is None and record.call_span is not None:
        record.span_context = record.call_span.context
    elif record.span_context is None and record.traced:
        caller = callers_span(record.metadata) if record.metadata is not None else None
        record.metadata = None
        record.span_context = caller or SpanContext(random.getrandbits(128) or 1, random.getrandbits(64) or 1,
                                                    is_remote=False)
    return record.span_context


def callers_span(metadata: Callable[[], Any]) -> SpanContext | None:
    """The span a caller sent in the call's metadata (W3C `traceparent` by default), or None."""
    try:
        pairs = metadata() or ()
    except Exception:  # the call is over: its metadata can no longer be read
        return None
    fields = propagate.get_global_textmap().fields
    carrier = {k: v for k, v in pairs if k in fields and isinstance(v, str)}
    if not carrier:
        return None
    found = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return found if found.is_valid else None



def annotate_call(*, model: str | None = None, version: int | None = None, request_id: str | None = None,
                  validation_ns: tuple[int, int] | None = None,
                  prediction: tuple[Sequence[str], Any] | None = None) -> None:
    """Record what the request path learned about the current call (no-op outside a call)."""
    record = current_call.get()
    if record is None:
        return
    if model is not None:
        record.model = model
    if version is not None:
        record.version = str(version)
    if request_id is not None:
        record.request_id = request_id
    if validation_ns is not None:
        record.validation_ns = validation_ns
    if prediction is not None:
        record.prediction = prediction


def annotate_audit(**fields: object) -> None:
    """Add fields to the current call's audit line (no-op outside a call)."""
    record = current_call.get()
    if record is not None:
        record.audit_fields = {**(record.audit_fields or {}), **fields}


def annotate_items(items: list[CallItem]) -> None:
    """Record the items of the current batch call (no-op outside a call)."""
    record = current_call.get()
    if record is not None:
        record.items = items


def note_error(error: BaseException) -> None:
    """Record the error the current call failed with (no-op outside a call)."""
    record = current_call.get()
    if record is not None:
        record.error = error
