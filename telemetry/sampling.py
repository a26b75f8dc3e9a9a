"""Errors and slow calls are traced whatever the head sampler decided, at no cost to the calls it passed over.

A call the sampler does not pick gets a non-recording span (nothing is recorded for its stages). When such a call
fails or takes longer than the threshold, `record_kept_call` writes its server span after the fact, with its real
start time, parent and attributes, through a second tracer that samples everything and exports to the same place.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode


def record_kept_call(keep_tracer: trace.Tracer, *, name: str, parent: Context, start_ns: int, end_ns: int,
                     attributes: dict[str, Any], error: str | None, exception: BaseException | None,
                     validation_ns: tuple[int, int] | None) -> None:
    """Write the server span (and its validation child) of an unsampled call that failed or was slow."""
    span = keep_tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                  start_time=start_ns, record_exception=False, set_status_on_exception=False)
    span.set_attribute("vigil.trace.kept", "error" if error else "slow")
    if error:
        span.set_status(Status(StatusCode.ERROR, error))
        if exception is not None:
            span.record_exception(exception)
    if validation_ns:
        child = keep_tracer.start_span("validate", context=trace.set_span_in_context(span),
                                       start_time=validation_ns[0])
        child.end(validation_ns[1])
    span.end(end_ns)
