"""The one call interceptor: a span per call (OpenTelemetry RPC conventions) and the per-call metrics.

It wraps each method handler once, when services are registered (`wrap`), rather than running as a
`grpc.aio.ServerInterceptor`: the aio interceptor chain costs tens of microseconds on every call, which is more
than the telemetry itself. A call the sampler passes over gets a non-recording span (its stages record nothing),
and only failed or slow ones are written after the fact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from vigil.telemetry.calls.context import CallRecord, current_call
from vigil.telemetry.calls.spans import ROOT_CONTEXT, UNSET, CallSpan, CallTracing, child_context, exception_event
from vigil.telemetry.metrics.instruments import Instruments

logger = logging.getLogger(__name__)

UNTRACED_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                               "grpc.reflection.v1.ServerReflection"})
"""Probes and tooling: neither traced nor counted."""

_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_STATUS_NAMES = {code: code.name for code in grpc.StatusCode}


class TelemetryInterceptor:
    """Continues the caller's trace from gRPC metadata, traces the call, counts and times it.

    >>> interceptor = TelemetryInterceptor(instruments, tracing=CallTracing(...), slow_seconds=1.0)
    >>> handler = interceptor.wrap("/vigil.v1.Inference/Predict", handler)   # as services register
    """

    def __init__(self, instruments: Instruments, *, tracing: CallTracing | None, slow_seconds: float) -> None:
        self._tracing = tracing
        self._instruments = instruments
        self._slow_ns = int(slow_seconds * 1e9)
        self._propagated = frozenset(propagate.get_global_textmap().fields)
        self.in_flight: dict[str, int] = {}
        """Calls being handled now, by method (read by an observable gauge)."""

    def wrap(self, full_method: str, handler: Any) -> Any:
        """The handler with telemetry around it (the handler itself for probes and tooling)."""
        if handler is None:
            return None
        return self._wrap(full_method, handler)

    def _wrap(self, full_method: str, handler: Any) -> Any:
        service, _, method = full_method.lstrip("/").rpartition("/")
        if service in UNTRACED_SERVICES:
            return handler
        name = f"{service}/{method}"
        self.in_flight.setdefault(method, 0)
        if handler.unary_unary or handler.stream_unary:
            behavior = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                call = self._begin(name, service, method, context)
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    call.exception = exc
                    raise
                finally:
                    self._end(call, context)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(unary, handler.request_deserializer, handler.response_serializer)

        streaming = handler.unary_stream or handler.stream_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            call = self._begin(name, service, method, context)
            call.peer = call_peer(context)  # a stream may end after its call is gone, when asking would be unsafe
            try:
                async for item in streaming(request, context):
                    yield item
            except BaseException as exc:
                call.exception = exc
                raise
            finally:
                self._end(call, context)

        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(stream, handler.request_deserializer, handler.response_serializer)

    def _begin(self, name: str, service: str, method: str, context: grpc.aio.ServicerContext) -> _Call:
        call = _Call(name, service, method, CallRecord(method=method))
        call.record_token = current_call.set(call.record)
        tracing = self._tracing
        if tracing is not None:
            call.record.traced = True
            if tracing.exporting:
                carrier = None
                for key, value in context.invocation_metadata() or ():
                    if key in self._propagated and isinstance(value, str):
                        carrier = carrier or {}
                        carrier[key] = value
                parent = propagate.extract(carrier) if carrier else None
                call.record.call_span = span = tracing.start(name, parent or ROOT_CONTEXT)
                if span.sampled:  # current for OpenTelemetry-aware code the call runs; others need no context
                    call.record.span_context = span.context
                    call.span_token = otel_context.attach(
                        trace.set_span_in_context(NonRecordingSpan(span.context), parent or ROOT_CONTEXT))
            else:  # nothing is exported: the caller's trace marks the call's log lines, read if a line is written
                call.record.metadata = context.invocation_metadata
        self.in_flight[method] += 1
        return call

    def _end(self, call: _Call, context: grpc.aio.ServicerContext) -> None:
        self.in_flight[call.method] -= 1
        end_ns = time.time_ns()
        try:
            # A cancelled call (a stream the client closed) may already be released: do not ask its context.
            gone = isinstance(call.exception, GeneratorExit | asyncio.CancelledError)
            code = grpc.StatusCode.CANCELLED if gone else call_status(context, call.exception)
            record = call.record
            instruments = self._instruments
            span: CallSpan | None = record.call_span
            exemplar = None
            if span is not None and span.sampled:
                exemplar = (span.trace_id, span.span_id)
            instruments.request_duration.record((end_ns - call.start_ns) / 1e9,
                                                (record.model, record.version, call.method), exemplar)
            instruments.requests.add((record.model, record.version, call.method, _STATUS_NAMES[code]))
            if span is not None and (span.sampled or code is not grpc.StatusCode.OK
                                     or end_ns - call.start_ns >= self._slow_ns):
                self._write_span(call, span, code, None if gone else context, end_ns)
        except Exception:  # telemetry never makes a call fail
            logger.exception("recording telemetry for %s failed", call.method)
        finally:
            # A stream closed from another task (GeneratorExit) ends in a context that is not its own, and that
            # context is discarded anyway: resetting there would fail (OpenTelemetry would log it as an error).
            if not isinstance(call.exception, GeneratorExit):
                try:
                    if call.span_token is not None:
                        otel_context.detach(call.span_token)
                    current_call.reset(call.record_token)
                except ValueError:
                    pass

    def _write_span(self, call: _Call, span: CallSpan, code: grpc.StatusCode,
                    context: grpc.aio.ServicerContext | None, end_ns: int) -> None:
        """The call's server span (and its validation span): sampled, or kept because it failed or was slow."""
        failed = code is not grpc.StatusCode.OK
        tracing = self._tracing
        assert tracing is not None
        record = call.record
        attributes: dict[str, Any] = {**span.attributes, "rpc.system": "grpc", "rpc.service": call.service,
                                      "rpc.method": call.method, "rpc.grpc.status_code": code.value[0]}
        if record.model:
            attributes["vigil.model"] = record.model
            attributes["vigil.model.version"] = record.version
        if record.request_id:
            attributes["vigil.request.id"] = record.request_id
        if record.prediction is not None and len(record.prediction[0]):
            labels, probabilities = record.prediction
            attributes["vigil.prediction.rows"] = len(labels)
            attributes["vigil.prediction.label"] = max(set(labels), key=list(labels).count)  # the most common
            attributes["vigil.prediction.confidence.min"] = float(min(probabilities))
        peer = call.peer or (call_peer(context) if context is not None else None)
        if peer:
            attributes["network.peer.address"], attributes["network.peer.port"] = peer
        status = UNSET
        events = []
        if failed:
            status = Status(StatusCode.ERROR, f"{code.name}: {_details(context) if context is not None else ''}")
            exception = record.error or (
                call.exception if not isinstance(call.exception, grpc.aio.AbortError) else None)
            if exception is not None:
                events.append(exception_event(exception, end_ns))
        if span.sampled:
            writer, span_context = tracing.sampled, span.context
        else:  # kept: written with a span id of its own, since its children (if any) were not recorded
            writer, span_context = tracing.kept, child_context(span.parent or span.context)
            attributes["vigil.trace.kept"] = "error" if failed else "slow"
        writer.write(call.name, context=span_context, parent=span.parent, start_ns=call.start_ns, end_ns=end_ns,
                     attributes=attributes, kind=SpanKind.SERVER, status=status, events=events)
        if record.validation_ns:
            writer.write("validate", parent=span_context, start_ns=record.validation_ns[0],
                         end_ns=record.validation_ns[1])


class _Call:
    __slots__ = ("name", "service", "method", "record", "peer", "start_ns", "exception",
                 "record_token", "span_token")

    def __init__(self, name: str, service: str, method: str, record: CallRecord) -> None:
        self.name = name
        self.service = service
        self.method = method
        self.peer: tuple[str, int] | None = None
        self.record = record
        self.start_ns = time.time_ns()
        self.exception: BaseException | None = None
        self.record_token: Any = None
        self.span_token: Any = None


def call_status(context: grpc.aio.ServicerContext, exception: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with: the one its handler set, else OK, CANCELLED or UNKNOWN from its exception."""
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return _STATUS_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    if exception is None:
        return grpc.StatusCode.OK
    if type(exception).__name__ == "CancelledError":
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _details(context: grpc.aio.ServicerContext) -> str:
    try:
        return str(context.details() or "")
    except Exception:
        return ""


def call_peer(context: grpc.aio.ServicerContext) -> tuple[str, int] | None:
    """The caller's address and port, or None when gRPC does not say."""
    try:
        peer = context.peer()  # e.g. "ipv4:127.0.0.1:50412" or "ipv6:[::1]:50412"
    except Exception:
        return None
    if not peer or ":" not in peer:
        return None
    address, _, port = peer.partition(":")[2].rpartition(":")
    return (address.strip("[]"), int(port)) if port.isdigit() else None
