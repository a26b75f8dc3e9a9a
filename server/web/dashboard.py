"""The web dashboard on the HTTP port: one page (`/`) and a server-sent-events mirror of the Telemetry stream
(`/telemetry/stream`), each frame the same `TelemetryFrame` as the gRPC stream, in its JSON form."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web
from google.protobuf import json_format

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.telemetry.stream.errors import StreamError, TooManySubscribers
from vigil.telemetry.stream.hub import TelemetryHub

logger = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("static") / "dashboard.html"


def frame_json(frame: bytes) -> str:
    """A serialized frame as one line of JSON (proto field names, every field present)."""
    message = telemetry_pb2.TelemetryFrame.FromString(frame)
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None,
                                     always_print_fields_with_no_presence=True)


def add_dashboard_routes(app: web.Application, hub: TelemetryHub | None) -> None:
    page = PAGE.read_bytes()

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def stream(request: web.Request) -> web.StreamResponse:
        if hub is None:
            return web.Response(status=503, text="telemetry is turned off on this server\n")
        try:
            interval = int(request.query.get("interval_ms", "0") or 0)
            models = [m for m in request.query.get("models", "").split(",") if m]
            sections = [s for s in request.query.get("sections", "").split(",") if s]
            subscription = hub.subscribe(interval, models, sections, request.query.get("member", ""))
        except ValueError:
            return web.Response(status=400, text="interval_ms must be an integer\n")
        except StreamError as exc:
            return web.Response(status=429 if isinstance(exc, TooManySubscribers) else 400, text=f"{exc}\n")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            async for frame in subscription:
                await response.write(f"data: {frame_json(frame)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the browser went away, or the server is stopping
        finally:
            subscription.close()
        return response

    app.router.add_get("/", index)
    app.router.add_get("/telemetry/stream", stream)
