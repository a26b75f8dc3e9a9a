"""Wrapping RPC method handlers once, as services register: how the call gate and telemetry sit around every
call. (A `grpc.aio.ServerInterceptor` chain would do the same at a cost of tens of microseconds per call.)"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

HandlerWrap = Callable[[str, Any], Any]
"""`wrap(full_method, handler) -> handler`: returns the handler, or one with something around it."""


class WrappingServer:
    """Stands in for a server when a generated `add_*Servicer_to_server` registers handlers: each handler is wrapped
    by every function of `wraps` in turn (the first innermost).

    Methods a service registers by name are served from one table, looked up by the call's full method name, and
    not handed to `add_registered_method_handlers`: `grpc.aio` (1.85) waits on a pending task per registered method
    with `asyncio.wait` for every call, which costs about 8% of a one-row Predict's server CPU (see
    docs/benchmarks.md). The table is the server's first generic handler, so it answers before the per-service
    handlers the generated code also adds.

    >>> add_HealthServicer_to_server(servicer, WrappingServer(server, [gate.wrap, telemetry.wrap]))
    """

    def __init__(self, server: Any, wraps: Sequence[HandlerWrap]) -> None:
        self._server = server
        self._wraps = tuple(wraps)
        self._methods = _MethodTable()
        server.add_generic_rpc_handlers((self._methods,))

    def wrap(self, full_method: str, handler: Any) -> Any:
        for wrap in self._wraps:
            if handler is None:
                return None
            handler = wrap(full_method, handler)
        return handler

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGenericHandler(h, self.wrap) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, handler in handlers.items():
            full_method = f"/{service}/{name}"
            self._methods.handlers[full_method] = self.wrap(full_method, handler)


class _MethodTable(grpc.GenericRpcHandler):
    """Wrapped handlers by full method name ("/vigil.v1.Inference/Predict")."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        return self.handlers.get(handler_call_details.method)


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, wrap: HandlerWrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[tuple[str, int], Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        key = (handler_call_details.method, id(handler))
        wrapped = self._wrapped.get(key)
        if wrapped is None:
            wrapped = self._wrapped[key] = self._wrap(handler_call_details.method, handler)
        return wrapped


class Undecodable:
    """Stands in for a request message whose bytes did not parse (see `safe_deserializer`)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserialize` returning an `Undecodable` instead of raising: gRPC parses requests before any handler runs and
    would answer a parse error with UNKNOWN; this way the handler can answer INVALID_ARGUMENT."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:
            return Undecodable(exc)

    return parse


def rewrap(handler: Any, unary: Callable[[Any], Any], stream: Callable[[Any], Any],
           request_deserializer: Callable[[bytes], Any] | None = None) -> Any:
    """A handler of the same kind and serializers as `handler`, whose behaviour is `unary(behaviour)` for
    unary-response methods and `stream(behaviour)` for streaming-response ones (and whose requests are parsed by
    `request_deserializer` when given)."""
    parse = request_deserializer or handler.request_deserializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), parse, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), parse, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), parse, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), parse, handler.response_serializer)
