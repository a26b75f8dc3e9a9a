"""The HTTP port: Prometheus `/metrics`, `/healthz` and `/readyz` for probes that cannot speak gRPC, and the web
dashboard (`/`, fed by `/telemetry/stream`), and the operator report (`/report`, `/report.json`)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from vigil.server.security.credentials import TokenTable, bearer_token
from vigil.server.web.dashboard import add_dashboard_routes
from vigil.server.web.reports import PeriodQuality, add_report_routes
from vigil.telemetry.history.recorder import HistoryRecorder
from vigil.telemetry.quality.monitor import QualityMonitor
from vigil.telemetry.stream.hub import TelemetryHub

logger = logging.getLogger(__name__)


PAGE_PATHS = frozenset({"/"})
"""The dashboard page itself holds no data (it reads the stream, which needs a token), so it is always served."""


@dataclass(frozen=True)
class HttpAccess:
    """Who may read the HTTP port: the same tokens as gRPC (`Authorization: Bearer <token>`, or the query parameter
    `access_token` for the browser's EventSource), or a client certificate the TLS handshake verified."""

    tokens: TokenTable
    open_paths: frozenset[str]
    mutual_tls: bool = False

    @property
    def required(self) -> bool:
        return bool(self.tokens) or self.mutual_tls

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        @web.middleware
        async def check(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            if request.path in self.open_paths or request.path in PAGE_PATHS or self._admits(request):
                return await handler(request)
            return web.Response(status=401, text="this server needs credentials: send `Authorization: Bearer "
                                                 "<token>` (or ?access_token=<token>)\n",
                                headers={"WWW-Authenticate": 'Bearer realm="vigil"'})
        return check

    def _admits(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization")
        token = bearer_token(header) if header is not None else request.query.get("access_token")
        if token and self.tokens:
            return self.tokens.identify(token) is not None
        if self.mutual_tls and request.transport is not None:
            return bool(request.transport.get_extra_info("peercert"))  # verified against the client CA
        return False


def build_web_app(registry: CollectorRegistry, *, is_ready: Callable[[], bool],
                  hub: TelemetryHub | None = None, quality: QualityMonitor | None = None,
                  access: HttpAccess | None = None, reports: HistoryRecorder | None = None,
                  period_quality: PeriodQuality | None = None) -> web.Application:
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

    app = web.Application(middlewares=[access.middleware()] if access is not None and access.required else [])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    add_dashboard_routes(app, hub)
    add_report_routes(app, reports, quality, period_quality)
    return app


class WebServer:
    """Runs the HTTP app on host:port (0 picks a free port; `port` tells which after `start`), or on a Unix socket
    (`unix_path`: a worker's app, which only its supervisor reads)."""

    def __init__(self, app: web.Application, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                 unix_path: str | None = None) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._requested_port = port
        self._ssl = ssl_context
        self._unix_path = unix_path
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        if self._unix_path is not None:
            await web.UnixSite(self._runner, self._unix_path).start()
            self.port = 0
            return
        site = web.TCPSite(self._runner, self._host, self._requested_port, ssl_context=self._ssl)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
