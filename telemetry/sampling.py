"""Head sampling that still keeps errors and slow requests.

The configured sampler decides as usual, but every span is recorded: a DROP becomes RECORD_ONLY. Sampled spans
are exported as usual. Unsampled spans wait, grouped by trace and bounded, until their local root span (the
server span of the call) ends: when it failed or took longer than the threshold, the whole local tree is
exported; otherwise it is dropped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

MAX_PENDING_TRACES = 4096
"""Unsampled traces waiting for their root span to end; the oldest is dropped beyond this."""
MAX_SPANS_PER_TRACE = 256
"""Unsampled spans kept for one trace; more are dropped."""


class RecordEverySampler(Sampler):
    """Wraps a sampler so that what it would drop is recorded instead (but not marked sampled)."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
        attributes: Attributes = None, links: Sequence[Link] | None = None, trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self._inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.DROP:
            return SamplingResult(Decision.RECORD_ONLY, result.attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"RecordEvery({self._inner.get_description()})"


class KeepErrorsAndSlowProcessor(SpanProcessor):
    """Forwards sampled spans to `inner`; forwards an unsampled local trace only when it failed or was slow."""

    def __init__(self, inner: SpanProcessor, *, slow_threshold: float) -> None:
        self._inner = inner
        self._slow_ns = int(slow_threshold * 1e9)
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._lock = threading.Lock()
        self.kept = 0
        """Unsampled local traces exported because they failed or were slow."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or context.trace_flags.sampled:
            self._inner.on_end(span)
            return
        is_local_root = span.parent is None or span.parent.is_remote
        with self._lock:
            spans = self._pending.get(context.trace_id)
            if spans is None:
                spans = self._pending[context.trace_id] = []
                while len(self._pending) > MAX_PENDING_TRACES:
                    self._pending.popitem(last=False)
            if len(spans) < MAX_SPANS_PER_TRACE:
                spans.append(span)
            if not is_local_root:
                return
            self._pending.pop(context.trace_id, None)
        if self._is_interesting(span):
            self.kept += 1
            for kept in spans:
                self._inner.on_end(_as_sampled(kept))

    def _is_interesting(self, span: ReadableSpan) -> bool:
        if span.status.status_code is StatusCode.ERROR:
            return True
        if span.start_time is None or span.end_time is None:
            return False
        return span.end_time - span.start_time >= self._slow_ns

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


def _as_sampled(span: ReadableSpan) -> ReadableSpan:
    context: Any = span.context
    sampled = SpanContext(context.trace_id, context.span_id, context.is_remote,
                          TraceFlags(TraceFlags.SAMPLED), context.trace_state)
    return ReadableSpan(
        name=span.name, context=sampled, parent=span.parent, resource=span.resource, attributes=span.attributes,
        events=span.events, links=span.links, kind=span.kind, status=span.status, start_time=span.start_time,
        end_time=span.end_time, instrumentation_scope=span.instrumentation_scope,
    )
