"""Domain errors raised along the request path, and their one mapping to gRPC status codes.

    ServerError
     ├── ModelNotFound      unknown model or version             NOT_FOUND
     ├── PredictionNotFound feedback for an unknown or expired id NOT_FOUND
     ├── ModelNotReady      loading, failed or unloaded           UNAVAILABLE
     ├── InvalidInput       names, dtypes, shapes, bytes, limits  INVALID_ARGUMENT
     ├── Overloaded         a queue or limit is full              RESOURCE_EXHAUSTED
     ├── DeadlineExpired    the caller's deadline passed          DEADLINE_EXCEEDED
     ├── ModelLoadFailed    a (re)load failed; the old one serves FAILED_PRECONDITION
     ├── InferenceFailed    ONNX Runtime failed                   INTERNAL (generic message)
     └── NotSupported       a feature this server does not offer  UNIMPLEMENTED

The Telemetry stream's own refusals (`vigil.telemetry.stream.errors`) map here too: InvalidSubscription to
INVALID_ARGUMENT, TooManySubscribers to RESOURCE_EXHAUSTED.

Code that raises these does not import grpc; `status_for` is the only place that chooses a status code.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from vigil.server.store.records import StoreError
from vigil.telemetry.calls.context import note_error
from vigil.telemetry.stream.errors import InvalidSubscription, StreamError, TooManySubscribers

logger = logging.getLogger(__name__)


class ServerError(Exception):
    """Base of every error the server reports to a caller. The message is safe to show the caller."""


class ModelNotFound(ServerError):
    """The model, or the requested version of it, is not in the repository."""


class PredictionNotFound(ServerError):
    """Feedback names a request id with no recent prediction (never made, or older than predictions are kept)."""


class ModelNotReady(ServerError):
    """The model version exists but cannot serve now (loading, failed to load, unloaded)."""


class InvalidInput(ServerError):
    """The request does not match the model's signature or exceeds a size limit; the message names which."""


class InvalidRequest(ServerError):
    """A request field other than the tensors is out of range; the message names the field."""


class Overloaded(ServerError):
    """The server refuses new work because a bounded queue or limit is full; the message names the limit."""


class DeadlineExpired(ServerError):
    """The caller's deadline passed before the request was computed."""


class ModelLoadFailed(ServerError):
    """Loading a model (or some of its versions) failed; the message names the model, the versions and why, and
    which version, if any, keeps serving."""


class InferenceFailed(ServerError):
    """ONNX Runtime failed. The caller sees a generic message; the details go to the log only."""

    def __init__(self, request_id: str = "") -> None:
        suffix = f" (request id {request_id})" if request_id else ""
        super().__init__(f"inference failed{suffix}; see the server log")


class NotSupported(ServerError):
    """The call asks for something this server does not offer."""


STATUS_CODES: dict[type[Exception], grpc.StatusCode] = {
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    PredictionNotFound: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    ModelLoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    InferenceFailed: grpc.StatusCode.INTERNAL,
    NotSupported: grpc.StatusCode.UNIMPLEMENTED,
    InvalidSubscription: grpc.StatusCode.INVALID_ARGUMENT,
    TooManySubscribers: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StoreError: grpc.StatusCode.UNAVAILABLE,
}

INTERNAL_MESSAGE = "internal server error; see the server log"

MAX_QUOTED_CHARACTERS = 100
"""What a message quotes of a name or id the caller sent: at most this many characters of it."""
MAX_MESSAGE_BYTES = 1024
"""The longest status message sent (UTF-8): gRPC carries it percent-encoded in a trailer, which clients limit to
8 KiB of metadata, so a message echoing a huge input would otherwise turn into RESOURCE_EXHAUSTED."""


def quoted(text: str) -> str:
    """`text`, as a caller sent it, quoted for a message: in quotes, and cut after MAX_QUOTED_CHARACTERS (saying
    how long it was)."""
    if len(text) <= MAX_QUOTED_CHARACTERS:
        return f"'{text}'"
    return f"'{text[:MAX_QUOTED_CHARACTERS]}…' ({len(text)} characters)"


def bounded(message: str) -> str:
    """`message` cut to MAX_MESSAGE_BYTES of UTF-8 (on a character boundary)."""
    encoded = message.encode("utf-8")
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    return encoded[:MAX_MESSAGE_BYTES - 3].decode("utf-8", "ignore") + "…"


STORE_UNAVAILABLE_MESSAGE = "the prediction log cannot be reached right now (the server logged why); retry later"


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and caller-safe message for an exception (most specific class wins)."""
    if isinstance(error, StoreError):  # the store's name and address stay in the server's log
        logger.warning("a call failed on the prediction log: %s", error)
        return STATUS_CODES[StoreError], STORE_UNAVAILABLE_MESSAGE
    if isinstance(error, ServerError | StreamError):
        for cls in type(error).__mro__:
            if cls in STATUS_CODES:
                return STATUS_CODES[cls], bounded(str(error))
    logger.error("unexpected error while handling a call", exc_info=error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def maps_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a servicer method (unary or server-streaming) so errors reach the caller as a gRPC status.

    The only place `context.abort` is called for domain errors; everything unexpected becomes INTERNAL with
    a generic message and a logged traceback.
    """
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in handler(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                note_error(exc)
                await context.abort(*status_for(exc))

        return stream

    @functools.wraps(handler)
    async def unary(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            note_error(exc)
            await context.abort(*status_for(exc))

    return unary
