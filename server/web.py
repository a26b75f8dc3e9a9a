"""The HTTP port: Prometheus `/metrics`, `/healthz` and `/readyz` for probes that cannot speak gRPC, and the web
dashboard (`/`, fed by `/telemetry/stream`), and the drift report (`/report`, `/report.json`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from server.dashboard import add_dashboard_routes
from server.drift_report import add_report_routes
from telemetry.hub import TelemetryHub
from telemetry.quality import QualityMonitor

logger = logging.getLogger(__name__)


def build_web_app(registry: CollectorRegistry, *, is_ready: Callable[[], bool],
                  hub: TelemetryHub | None = None, quality: QualityMonitor | None = None) -> web.Application:
    """The aiohttp application served on the HTTP port."""

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_dashboard_routes(app, hub)
    add_report_routes(app, quality)
    return app


class WebServer:
    """Runs the HTTP app on host:port (0 picks a free port; `port` tells which after `start`)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._requested_port = port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
