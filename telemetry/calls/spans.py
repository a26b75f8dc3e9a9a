"""Server spans and the spans of their stages, written as finished spans when the call ends.

A call's span context is decided when the call starts, by the tracer provider's own sampler (so the standard
`OTEL_TRACES_SAMPLER` settings hold), and made current for the call as a non-recording span: the request path,
log lines and the batcher all see it. The spans themselves (the server span, validation, queue wait, inference)
are written once their start and end are known, straight to the span processors: this skips the SDK's live-span
machinery (attribute validation, locks, limits), which costs more than serving a small request.

Errors and slow calls are traced whatever the sampler decided: such a call's server span goes to a second set of
processors that export everything, with its real start time and parent.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

UNSET = Status(StatusCode.UNSET)
ROOT_CONTEXT = Context()
"""The empty context: a call whose caller sent no trace."""
_SAMPLED = TraceFlags.SAMPLED
_RANDOM = TraceFlags.RANDOM_TRACE_ID


class SpanWriter:
    """Writes finished spans to the span processors of one tracer provider.

    >>> writer = SpanWriter(processors, resource)
    >>> writer.write("queue", parent=server_span_context, start_ns=t0, end_ns=t1, attributes={...})
    """

    def __init__(self, processors: Sequence[SpanProcessor], resource: Resource, scope: str = "vigil") -> None:
        self._processors = tuple(processors)
        self._resource = resource
        self._scope = InstrumentationScope(scope)

    def write(self, name: str, *, parent: SpanContext | None, start_ns: int, end_ns: int,
              attributes: Mapping[str, Any] | None = None, links: Sequence[Link] = (), status: Status = UNSET,
              kind: SpanKind = SpanKind.INTERNAL, context: SpanContext | None = None,
              events: Sequence[Event] = ()) -> None:
        """One finished span: under `parent`, with `context` (or a new span id in the parent's trace)."""
        if context is None:
            assert parent is not None
            context = child_context(parent)
        span = ReadableSpan(name, context=context, parent=parent, resource=self._resource,
                            attributes=dict(attributes or {}), events=tuple(events), links=tuple(links), kind=kind,
                            status=status, start_time=start_ns, end_time=end_ns, instrumentation_scope=self._scope)
        for processor in self._processors:
            processor.on_end(span)


class FanOut:
    """Writes each span to several writers (an in-process exporter and the exporter process), with one span id."""

    def __init__(self, writers: Sequence[Any]) -> None:
        self._writers = tuple(writers)

    def write(self, name: str, *, parent: SpanContext | None, context: SpanContext | None = None,
              **fields: Any) -> None:
        if context is None:
            assert parent is not None
            context = child_context(parent)
        for writer in self._writers:
            writer.write(name, parent=parent, context=context, **fields)


def child_context(parent: SpanContext) -> SpanContext:
    return SpanContext(parent.trace_id, random.getrandbits(64) or 1, is_remote=False,
                       trace_flags=TraceFlags(parent.trace_flags | _SAMPLED), trace_state=parent.trace_state)


def exception_event(exception: BaseException, time_ns: int) -> Event:
    """The event OpenTelemetry's `record_exception` writes."""
    return Event("exception", {
        "exception.type": type(exception).__qualname__,
        "exception.message": str(exception),
        "exception.stacktrace": "".join(traceback.format_exception(exception)),
        "exception.escaped": "False",
    }, timestamp=time_ns)


class CallSpan:
    """The span a call runs under, decided when it starts (its `SpanContext` is built only when asked for: most
    calls are not sampled, and nothing asks)."""

    __slots__ = ("trace_id", "span_id", "flags", "state", "parent", "sampled", "attributes", "_context")

    def __init__(self, trace_id: int, span_id: int, flags: int, state: TraceState | None,
                 parent: SpanContext | None, sampled: bool, attributes: Mapping[str, Any]) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.state = state
        self.parent = parent
        """The caller's span (from `traceparent`), if any."""
        self.sampled = sampled
        self.attributes = attributes
        """Attributes the sampler asked for."""
        self._context: SpanContext | None = None

    @property
    def context(self) -> SpanContext:
        if self._context is None:
            self._context = SpanContext(self.trace_id, self.span_id, is_remote=False,
                                        trace_flags=TraceFlags(self.flags), trace_state=self.state)
        return self._context


class CallTracing:
    """Sampling decisions for calls, and the writers for sampled and for kept (failed or slow) spans."""

    def __init__(self, sampler: Sampler, sampled: SpanWriter, kept: SpanWriter, *, exporting: bool = True) -> None:
        self.sampler = sampler
        self.sampled = sampled
        self.kept = kept
        self.exporting = exporting
        """False when no exporter is configured: calls then only continue their caller's trace (for log lines)."""
        self._ratio_bound = _ratio_bound(sampler)

    def start(self, name: str, parent: Context) -> CallSpan:
        """Decide the span of a call continuing `parent` (the context extracted from its metadata)."""
        found = trace.get_current_span(parent).get_span_context() if parent is not ROOT_CONTEXT else None
        caller = found if found is not None and found.is_valid else None
        if caller is not None:
            trace_id = caller.trace_id
            flags = _RANDOM if caller.trace_flags.random_trace_id else 0
        else:
            trace_id = random.getrandbits(128) or 1
            flags = _RANDOM
        if self._ratio_bound is not None:  # the SDK's parent-based ratio sampler, decided without its objects
            sampled = (caller.trace_flags.sampled if caller is not None
                       else (trace_id & _TRACE_ID_LIMIT) < self._ratio_bound)
            state, attributes = (caller.trace_state if caller is not None else None), _NO_ATTRIBUTES
        else:
            result = self.sampler.should_sample(parent, trace_id, name, SpanKind.SERVER)
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            state, attributes = result.trace_state, result.attributes or _NO_ATTRIBUTES
        return CallSpan(trace_id, random.getrandbits(64) or 1, flags | (_SAMPLED if sampled else 0), state, caller,
                        sampled, attributes)


_TRACE_ID_LIMIT = (1 << 64) - 1
_NO_ATTRIBUTES: Mapping[str, Any] = {}


def _ratio_bound(sampler: Sampler) -> int | None:
    """The bound of a `ParentBased(TraceIdRatioBased)` sampler with the standard delegates (the default, and
    `parentbased_traceidratio`, `parentbased_always_on`/`_off`), whose decision is one comparison; None for any
    other sampler, which is then asked for each call."""
    if type(sampler) not in (ParentBased, ParentBasedTraceIdRatio):
        return None
    delegates = (sampler._remote_parent_sampled, sampler._remote_parent_not_sampled,  # type: ignore[attr-defined]
                 sampler._local_parent_sampled, sampler._local_parent_not_sampled)  # type: ignore[attr-defined]
    if delegates != (ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF):
        return None
    root = sampler._root  # type: ignore[attr-defined]
    if type(root) is TraceIdRatioBased:
        return int(root.bound)
    if root is ALWAYS_ON:
        return 1 << 64
    if root is ALWAYS_OFF:
        return 0
    return None
