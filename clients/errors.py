"""Client exceptions, and the one function that turns a gRPC error into them.

    VigilError
     ├── ModelNotFound      NOT_FOUND
     ├── Unavailable        UNAVAILABLE (model not ready, server unreachable or shutting down)
     ├── InvalidInput       INVALID_ARGUMENT
     ├── Overloaded         RESOURCE_EXHAUSTED (a full queue or subscriber limit)
     ├── MessageTooLarge    RESOURCE_EXHAUSTED (a message over a gRPC size limit, this client's or the server's)
     ├── DeadlineExceeded   DEADLINE_EXCEEDED
     ├── Unauthenticated    UNAUTHENTICATED
     ├── PermissionDenied   PERMISSION_DENIED
     ├── Cancelled          CANCELLED
     ├── Unimplemented      UNIMPLEMENTED
     ├── LoadFailed         FAILED_PRECONDITION (LoadModel: what was serving still serves)
     └── ServerError        INTERNAL, UNKNOWN and anything else
"""

from __future__ import annotations

import re

import grpc


class VigilError(Exception):
    """A call the server (or the channel) answered with an error status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class NotFound(VigilError):
    """What the call names does not exist on the server."""


class ModelNotFound(NotFound):
    """The model or version is not in the server's repository."""


class PredictionNotFound(NotFound):
    """Feedback named a request id with no recent prediction (unknown, or older than the server keeps them)."""


class Unavailable(VigilError):
    """The model is not ready, the server cannot be reached, or it is shutting down: try again, or elsewhere."""


class InvalidInput(VigilError):
    """The request does not match the model or exceeds a limit; the message names which."""


class Overloaded(VigilError):
    """The server is refusing work because a queue or limit is full."""


class DeadlineExceeded(VigilError):
    """The call's deadline passed."""


class Unauthenticated(VigilError):
    """Credentials are missing or wrong."""


class PermissionDenied(VigilError):
    """The credentials are valid but may not make this call."""


class Cancelled(VigilError):
    """The call was cancelled."""


class Unimplemented(VigilError):
    """The server does not offer this call."""


class LoadFailed(VigilError):
    """Loading a model, or some of its versions, failed; the message says why and what still serves."""


class MessageTooLarge(VigilError):
    """A message was over a gRPC size limit: the request over this client's `max_message_bytes` (it was never sent),
    the request over the server's limit, or the answer over this client's. Not a sign of load: send less per call
    (or raise the limit)."""


class ServerError(VigilError):
    """The server failed while handling the call."""


_ERRORS: dict[grpc.StatusCode, type[VigilError]] = {
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.FAILED_PRECONDITION: LoadFailed,
}

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def error_for(code: grpc.StatusCode | int, message: str, *,
              not_found: type[NotFound] = ModelNotFound) -> VigilError:
    """The client exception for a status code (a grpc.StatusCode or its number) and message; NOT_FOUND becomes
    `not_found` (what the call looks up: a model, or a prediction for feedback)."""
    if isinstance(code, int):
        code = _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    if code == grpc.StatusCode.NOT_FOUND:
        return not_found(code, message)
    return _ERRORS.get(code, ServerError)(code, message)


SERVER_CANCELLED = "CANCELLED"
"""The details of a call the server's gRPC library ended unheard: when a server shuts down, calls that arrived but
no handler had taken yet end CANCELLED (a known gRPC core behaviour, grpc/grpc#41785), though nobody cancelled them.
A call this client cancels says "Locally cancelled by application!" instead."""


def error_from_rpc(error: grpc.RpcError, *, not_found: type[NotFound] = ModelNotFound) -> VigilError:
    """The client exception for a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`). A call the server
    ended unheard while shutting down is `Unavailable` (it was never handled: send it again, elsewhere)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (size := _SIZE.search(details or "")) is not None:
        return _too_large(size)
    if code == grpc.StatusCode.CANCELLED and details == SERVER_CANCELLED:
        return Unavailable(grpc.StatusCode.UNAVAILABLE, "the server ended the call before handling it (it was "
                                                        "shutting down); it is safe to send it again")
    return error_for(code or grpc.StatusCode.UNKNOWN, details or "", not_found=not_found)


_SIZE = re.compile(r"(Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")
"""How gRPC words a message over its size limit, on either side."""


def _too_large(size: re.Match[str]) -> MessageTooLarge:
    direction, got, limit = size.group(1), int(size.group(2)), int(size.group(3))
    if direction == "Sent":
        text = (f"the request is {got:,} bytes, over this client's max_message_bytes of {limit:,}; it was not sent "
                "(send fewer rows per call, or raise max_message_bytes)")
    else:
        text = (f"a message of {got:,} bytes is over the server's limit or this client's max_message_bytes "
                f"({limit:,}): over the server's limit (VIGIL_LIMITS__MAX_MESSAGE_BYTES) when the request was, "
                "over this client's when the answer was; send fewer rows per call")
    return MessageTooLarge(grpc.StatusCode.RESOURCE_EXHAUSTED, text)
