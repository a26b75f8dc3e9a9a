"""Channels to a Vigil server: plaintext, TLS or mutual TLS, with an optional bearer token on every call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc


@dataclass(frozen=True)
class TLS:
    """TLS towards the server: the CA that signed its certificate (None: the system's roots), and for mutual TLS
    this client's certificate and key (PEM files).

    >>> Client("vigil.example:8001", tls=TLS(ca_file="ca.crt", cert_file="me.crt", key_file="me.key"))
    """

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None
    """The name to check the server's certificate against, when it differs from the target's host."""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(target: str, options: list[tuple[str, Any]], *, tls: TLS | None, token: str | None) -> grpc.Channel:
    """A blocking channel; with a token, every call carries `authorization: Bearer <token>`."""
    if tls is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, tls.credentials(), options=options + tls.options())
    return grpc.intercept_channel(channel, _TokenInterceptor(token)) if token else channel


def open_aio_channel(target: str, options: list[tuple[str, Any]], *, tls: TLS | None,
                     token: str | None) -> grpc.aio.Channel:
    """An asyncio channel; with a token, every call carries `authorization: Bearer <token>`."""
    interceptors: Sequence[Any] | None = _aio_token_interceptors(token) if token else None
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, tls.credentials(), options=options + tls.options(),
                                   interceptors=interceptors)


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def _with_token(metadata: Any, token: str) -> list[tuple[str, str | bytes]]:
    return [*(metadata or ()), ("authorization", f"Bearer {token}")]


class _TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, token: str | None) -> None:
        self._token = token or ""

    def _details(self, details: Any) -> _Details:
        return _Details(details.method, details.timeout, _with_token(details.metadata, self._token),
                        details.credentials, getattr(details, "wait_for_ready", None),
                        getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _aio_token_interceptors(token: str) -> list[Any]:
    def details(call: Any) -> Any:
        return grpc.aio.ClientCallDetails(call.method, call.timeout, _with_token(call.metadata, token),
                                          call.credentials, call.wait_for_ready)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, call: Any, request: Any) -> Any:
            return await continuation(details(call), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation: Any, call: Any, request: Any) -> Any:
            return await continuation(details(call), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation: Any, call: Any, requests: Any) -> Any:
            return await continuation(details(call), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation: Any, call: Any, requests: Any) -> Any:
            return await continuation(details(call), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
