"""The `vigil-worker` trailer: which of the host's worker processes answered a call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from vigil.server.api.handler_wrapping import HandlerWrap, rewrap

WORKER_KEY = "vigil-worker"
"""Trailing metadata key; its value is the worker's number, from 0."""


def worker_trailer(index: int) -> HandlerWrap:
    """A handler wrap that adds `vigil-worker: <index>` to the trailing metadata of every call, failed ones too.

    It is set before the handler runs, so that a call the handler aborts carries it, and again after, since a
    handler that sets trailing metadata of its own replaces what was there.
    """
    pair = (WORKER_KEY, str(index))
    alone = (pair,)

    def keep(context: grpc.aio.ServicerContext) -> None:
        trailing = context.trailing_metadata()
        if trailing is not alone and pair not in trailing:  # the handler set trailing metadata of its own
            context.set_trailing_metadata((*trailing, pair))

    def unary(behaviour: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            context.set_trailing_metadata(alone)
            try:
                return await behaviour(request, context)
            finally:
                keep(context)

        return call

    def stream(behaviour: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            context.set_trailing_metadata(alone)
            try:
                async for item in behaviour(request, context):
                    yield item
            finally:
                keep(context)

        return call

    def wrap(full_method: str, handler: Any) -> Any:
        return rewrap(handler, unary, stream)

    return wrap
