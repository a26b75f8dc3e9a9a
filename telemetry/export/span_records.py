"""Compact span records: what the serving process hands the span exporter process, and how they become spans again.

A record is a tuple of plain values (ids as integers, times in nanoseconds, attributes as a dict), so the serving
process only builds a tuple per span and `marshal` packs a whole batch in C; the exporter process turns records
into the SDK's `ReadableSpan`s and leaves encoding and export to the SDK. Frames on the pipe are a 4-byte
little-endian length and a `marshal`ed `(queue, [record, ...])`, or `(HELLO, resource attributes)` first.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

SAMPLED, KEPT, HELLO = 0, 1, 2
"""Frame kinds: spans of sampled calls, spans kept whatever the sampler said (failed or slow calls), and the
exporter's resource."""

FRAME_HEADER = struct.Struct("<I")
MAX_FRAME = 64 << 20
"""A frame larger than this is refused by the reader (a corrupt length)."""

Record = tuple[Any, ...]
_KINDS = {kind.value: kind for kind in SpanKind}
_CODES = {code.value: code for code in StatusCode}
_KIND_VALUES = {kind: kind.value for kind in SpanKind}
_CODE_VALUES = {code: code.value for code in StatusCode}
_UNSET = StatusCode.UNSET


def record(name: str, trace_id: int, span_id: int, flags: int, state: str, parent: SpanContext | None,
           start_ns: int, end_ns: int, attributes: Mapping[str, Any] | None, links: Sequence[Link], status: Status,
           kind: SpanKind, events: Sequence[Event]) -> Record:
    """One span as plain values (`state`: the W3C `tracestate` header, or "")."""
    code = status.status_code
    return (
        name, trace_id, span_id, flags, state,
        parent.span_id if parent is not None else 0, parent is not None and parent.is_remote,
        _KIND_VALUES[kind], start_ns, end_ns, attributes or None,
        [(link.context.trace_id, link.context.span_id, int(link.context.trace_flags)) for link in links]
        if links else None,
        None if code is _UNSET else (_CODE_VALUES[code], status.description or ""),
        [(e.name, dict(e.attributes or {}), e.timestamp) for e in events] if events else None,
    )


def state_header(context: SpanContext) -> str:
    state = context.trace_state
    return state.to_header() if state else ""


def frame(kind: int, payload: Any) -> bytes:
    data = marshal.dumps((kind, payload))
    return FRAME_HEADER.pack(len(data)) + data


def to_span(values: Record, resource: Resource, scope: InstrumentationScope) -> ReadableSpan:
    """The SDK's finished span for a record."""
    (name, trace_id, span_id, flags, state, parent_id, parent_remote, kind, start_ns, end_ns, attributes, links,
     status, events) = values
    trace_state = TraceState.from_header([state]) if state else None
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags), trace_state=trace_state)
    parent = (SpanContext(trace_id, parent_id, is_remote=parent_remote, trace_flags=TraceFlags(flags))
              if parent_id else None)
    return ReadableSpan(
        name, context=context, parent=parent, resource=resource, attributes=attributes or {},
        events=tuple(Event(n, a, timestamp=t) for n, a, t in events or ()),
        links=tuple(Link(SpanContext(t, s, is_remote=True, trace_flags=TraceFlags(f))) for t, s, f in links or ()),
        kind=_KINDS.get(kind, SpanKind.INTERNAL),
        status=Status(_CODES.get(status[0], StatusCode.ERROR), status[1] or None) if status else Status(),
        start_time=start_ns, end_time=end_ns, instrumentation_scope=scope,
    )
