"""The one server interceptor: a span per call (OpenTelemetry RPC conventions) and the per-call metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from telemetry.context import CallRecord, current_call
from telemetry.instruments import Instruments

logger = logging.getLogger(__name__)

UNTRACED_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                               "grpc.reflection.v1.ServerReflection"})
"""Probes and tooling: neither traced nor counted."""


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    """Continues the caller's trace from gRPC metadata, opens the server span, counts and times the call.

    >>> interceptor = TelemetryInterceptor(tracer_provider.get_tracer("vigil"), instruments)
    >>> server = grpc.aio.server(interceptors=[interceptor])
    """

    def __init__(self, tracer: trace.Tracer, instruments: Instruments) -> None:
        self._tracer = tracer
        self._instruments = instruments

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").rpartition("/")
        if handler is None or service in UNTRACED_SERVICES:
            return handler
        metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        call = _Call(self, service, method, metadata)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                call.wrap_unary(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                call.wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                call.wrap_stream(handler.unary_stream), handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            call.wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer)


class _Call:
    def __init__(self, interceptor: TelemetryInterceptor, service: str, method: str, metadata: dict[str, str]):
        self.interceptor = interceptor
        self.service = service
        self.method = method
        self.metadata = metadata

    def wrap_unary(self, behavior: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with self._observed(context) as observe:
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    observe.failed(exc)
                    raise

        return unary

    def wrap_stream(self, behavior: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[[Any, Any], Any]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with self._observed(context) as observe:
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    observe.failed(exc)
                    raise

        return stream

    def _observed(self, context: grpc.aio.ServicerContext) -> _Observation:
        return _Observation(self, context)


class _Observation:
    """The span, call record and timing of one call, closed in `__exit__`."""

    def __init__(self, call: _Call, context: grpc.aio.ServicerContext) -> None:
        self.call = call
        self.context = context
        self.exception: BaseException | None = None

    def __enter__(self) -> _Observation:
        call = self.call
        parent = propagate.extract(call.metadata)
        self.record = CallRecord(method=call.method)
        self.token = current_call.set(self.record)
        self.started = time.perf_counter()
        attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": call.service, "rpc.method": call.method}
        peer = _peer(self.context)
        if peer:
            attributes["network.peer.address"], attributes["network.peer.port"] = peer
        self.span = call.interceptor._tracer.start_span(
            f"{call.service}/{call.method}", context=parent, kind=SpanKind.SERVER, attributes=attributes,
            record_exception=False, set_status_on_exception=False)
        self.span_token = trace.use_span(self.span, end_on_exit=False)
        self.span_token.__enter__()
        call.interceptor._instruments.in_flight.add(1, {"method": call.method})
        return self

    def failed(self, exc: BaseException) -> None:
        self.exception = exc

    def __exit__(self, *exc_info: object) -> None:
        call = self.call
        instruments = call.interceptor._instruments
        try:
            code = _status_code(self.context, self.exception)
            record = self.record
            labels = {"model": record.model, "version": record.version, "method": call.method}
            span = self.span
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if record.model:
                span.set_attribute("vigil.model", record.model)
                span.set_attribute("vigil.model.version", record.version)
            if record.request_id:
                span.set_attribute("vigil.request.id", record.request_id)
            if record.validation_ns:
                validate = call.interceptor._tracer.start_span("validate", start_time=record.validation_ns[0])
                validate.end(record.validation_ns[1])
            if code is not grpc.StatusCode.OK:
                error = record.error or self.exception
                span.set_status(Status(StatusCode.ERROR, f"{code.name}: {_details(self.context)}"))
                if error is not None and not isinstance(error, grpc.aio.AbortError):
                    span.record_exception(error)
                elif record.error is not None:
                    span.record_exception(record.error)
            instruments.request_duration.record(time.perf_counter() - self.started, labels)
            instruments.requests.add(1, {**labels, "code": code.name})
        except Exception:  # telemetry never makes a call fail
            logger.exception("recording telemetry for %s failed", call.method)
        finally:
            instruments.in_flight.add(-1, {"method": call.method})
            self.span_token.__exit__(None, None, None)
            self.span.end()
            current_call.reset(self.token)


def _status_code(context: grpc.aio.ServicerContext, exception: BaseException | None) -> grpc.StatusCode:
    code = None
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if exception is None:
        return grpc.StatusCode.OK
    if isinstance(exception, BaseException) and type(exception).__name__ == "CancelledError":
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _details(context: grpc.aio.ServicerContext) -> str:
    try:
        return str(context.details() or "")
    except Exception:
        return ""


def _peer(context: grpc.aio.ServicerContext) -> tuple[str, int] | None:
    try:
        peer = context.peer()  # e.g. "ipv4:127.0.0.1:50412" or "ipv6:[::1]:50412"
    except Exception:
        return None
    if not peer or ":" not in peer:
        return None
    address, _, port = peer.partition(":")[2].rpartition(":")
    return (address.strip("[]"), int(port)) if port.isdigit() else None
