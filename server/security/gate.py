"""The call gate: every call passes it before its handler runs, and it writes the audit line when the call ends.

- While the server drains, new calls are refused with UNAVAILABLE (health checks still answer, NOT_SERVING).
- With tokens or mutual TLS configured, a call outside the open services needs a valid bearer token (metadata
  `authorization: Bearer <token>`) or, under mutual TLS, the client certificate the handshake verified; otherwise
  UNAUTHENTICATED. Loading and unloading models may be kept to admin identities (PERMISSION_DENIED).
- Predictions, feedback and model loads and unloads get an audit line each (per item for batch calls).

It sits inside the telemetry wrapper, so refused calls are counted and traced like any other.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from vigil.server.api.handler_wrapping import Undecodable, rewrap, safe_deserializer
from vigil.server.errors import status_for
from vigil.server.security.audit import AuditLog
from vigil.server.security.credentials import TokenTable, bearer_token, certificate_identity
from vigil.telemetry.calls.context import CallRecord, current_call, trace_of
from vigil.telemetry.calls.interceptor import call_peer, call_status

HEALTH_SERVICE = "grpc.health.v1.Health"

ADMIN_METHODS = frozenset({"LoadModel", "UnloadModel", "RepositoryModelLoad", "RepositoryModelUnload", "SetRollout",
                           "Forget"})
"""Methods that change what the server serves, or erase what it logged."""

AUDITED_METHODS = frozenset({"Predict", "BatchPredict", "ModelInfer", "Feedback", "BatchFeedback"}) | ADMIN_METHODS
"""Methods that leave an audit line (one per item for the batch calls)."""

ANONYMOUS = "anonymous"
"""The identity of callers on a server without tokens or mutual TLS, and of calls to open services."""

UNAUTHENTICATED = "unauthenticated"
"""The identity audit lines give a call refused for missing or wrong credentials."""



class Refused(Exception):
    """The gate refuses the call with this status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str, identity: str = UNAUTHENTICATED) -> None:
        super().__init__(message)
        self.code = code
        self.identity = identity


class CallGate:
    """Admission, authentication and audit for every call.

    >>> gate = CallGate(tokens=TokenTable({...}), mutual_tls=False, open_services={"grpc.health.v1.Health"},
    ...                 admins=set(), audit=None)
    >>> add_InferenceServicer_to_server(servicer, WrappingServer(server, [gate.wrap, telemetry.wrap]))
    >>> gate.draining = True      # on shutdown: new calls get UNAVAILABLE
    """

    def __init__(self, *, tokens: TokenTable, mutual_tls: bool, open_services: set[str] | frozenset[str],
                 admins: set[str] | frozenset[str], audit: AuditLog | None) -> None:
        self.tokens = tokens
        """The bearer tokens (the HTTP port checks the same ones)."""
        self._mutual_tls = mutual_tls
        self._open = frozenset(open_services)
        self._admins = frozenset(admins)
        self.audit = audit
        self.draining = False
        self.requires_credentials = bool(tokens) or mutual_tls
        self.active = 0
        """Unary calls admitted and not yet answered."""

    async def drain(self, timeout: float) -> bool:
        """Wait until every admitted unary call is answered (True), or `timeout` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self.active

    def wrap(self, full_method: str, handler: Any) -> Any:
        """The handler with the gate around it."""
        service, _, method = full_method.lstrip("/").rpartition("/")
        is_open = service in self._open
        drains = service != HEALTH_SERVICE  # health answers while draining: NOT_SERVING
        audited = self.audit is not None and method in AUDITED_METHODS
        return rewrap(handler, self._unary(method, not is_open, drains, audited),
                      self._stream(method, not is_open, drains), safe_deserializer(handler.request_deserializer))

    def _unary(self, method: str, authenticate: bool, drains: bool, audited: bool) -> Callable[[Any], Any]:
        def outer(behaviour: Any) -> Any:
            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter() if audited else 0.0
                record = self._admit(method, authenticate, drains, context)
                if isinstance(record, Refused):
                    if audited:
                        self._audit(method, CallRecord(method=method, identity=record.identity), context, None,
                                    time.perf_counter() - started, status=record.code.name)
                    await context.abort(record.code, str(record))
                if not isinstance(request, _MESSAGES):
                    request = await _parsed(request, method, context)
                failure: BaseException | None = None
                self.active += 1
                try:
                    return await behaviour(request, context)
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    self.active -= 1
                    if audited and isinstance(record, CallRecord):
                        self._audit(method, record, context, failure, time.perf_counter() - started)
            return unary
        return outer

    def _stream(self, method: str, authenticate: bool, drains: bool) -> Callable[[Any], Any]:
        def outer(behaviour: Any) -> Any:
            async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
                record = self._admit(method, authenticate, drains, context)
                if isinstance(record, Refused):
                    await context.abort(record.code, str(record))
                return await _parsed(request, method, context)

            if not inspect.isasyncgenfunction(behaviour):
                # A handler that writes its stream with `context.write` (grpc_health's Watch) is a coroutine:
                # awaited, not iterated, and so is its wrapper.
                async def writes(request: Any, context: grpc.aio.ServicerContext) -> None:
                    await behaviour(await admitted(request, context), context)
                return writes

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                async for item in behaviour(await admitted(request, context), context):
                    yield item
            return stream
        return outer

    def _admit(self, method: str, authenticate: bool, drains: bool,
               context: grpc.aio.ServicerContext) -> CallRecord | Refused:
        """The call's record (with its identity), or why it is refused."""
        identity = self._identify(context) if authenticate and self.requires_credentials else ANONYMOUS
        if isinstance(identity, Refused):
            return identity
        if self.draining and drains:
            return Refused(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; send the call to another "
                                                        "replica or retry later", identity)
        if self._admins and method in ADMIN_METHODS and identity not in self._admins:
            return Refused(grpc.StatusCode.PERMISSION_DENIED,
                           f"{method} is for admin identities only (security.admin_identities)", identity)
        record = current_call.get()
        if record is None:  # telemetry is off: the gate keeps the record the request path annotates
            record = CallRecord(method=method)
            current_call.set(record)
        record.identity = identity
        return record

    def _identify(self, context: grpc.aio.ServicerContext) -> str | Refused:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                token = bearer_token(value)
                identity = self.tokens.identify(token) if token is not None and self.tokens else None
                if identity is None:
                    return Refused(grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")
                return identity
        if self._mutual_tls:  # the handshake already verified the certificate against the client CA
            names = context.auth_context().get("x509_common_name")
            if names:
                return certificate_identity(names[0].decode("utf-8", "replace"))
        return Refused(grpc.StatusCode.UNAUTHENTICATED,
                       "this server needs credentials: send metadata `authorization: Bearer <token>`"
                       + (" or a client certificate" if self._mutual_tls else ""))

    def _audit(self, method: str, record: CallRecord, context: grpc.aio.ServicerContext,
               failure: BaseException | None, seconds: float, *, status: str = "") -> None:
        audit = self.audit
        assert audit is not None
        span = trace_of(record)
        trace_id = format(span.trace_id, "032x") if span is not None and span.is_valid else ""
        peer = (call_peer(context) or ("", 0))[0]
        status = status or call_status(context, failure).name
        if record.items is None:
            audit.write(method=method, identity=record.identity, status=status, latency_seconds=seconds,
                        model=record.model, version=record.version, request_id=record.request_id,
                        trace_id=trace_id, peer=peer, **(record.audit_fields or {}))
            return
        for index, item in enumerate(record.items):
            item_status = "OK" if item.error is None else status_for(item.error)[0].name
            audit.write(method=method, identity=record.identity, status=item_status, latency_seconds=seconds,
                        model=item.model, version=item.version, request_id=item.request_id, trace_id=trace_id,
                        peer=peer, item=index)


def _undecodable_message(method: str, request: Undecodable) -> str:
    return f"the {method} request is not a valid message of this method: {request.error}"


_MESSAGES = (bytes, Message)
"""A parsed request: a message (or bytes, for a method without a parser)."""


async def _parsed(request: Any, method: str, context: grpc.aio.ServicerContext) -> Any:
    """The request, or INVALID_ARGUMENT when its bytes did not parse; a request stream is checked message by
    message as the handler reads it."""
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _undecodable_message(method, request))
    if isinstance(request, _MESSAGES):
        return request
    return _checked_stream(request, method, context)


async def _checked_stream(requests: AsyncIterator[Any], method: str,
                          context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _undecodable_message(method, request))
        yield request


