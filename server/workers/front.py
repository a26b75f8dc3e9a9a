"""The host's HTTP port under `vigil serve --workers N`: one `/metrics` for every worker, readiness of them all,
and everything else (dashboard, reports, their streams) passed to a ready worker.

Each worker serves its own HTTP app on a Unix socket that only the supervisor reads. Credentials are checked
here, with the same rules as a single server's HTTP port, so the workers' sockets check none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

from vigil.server.web.http_port import HttpAccess
from vigil.telemetry.export.merged_pages import SUMMED_TYPES, FamiliesCollector, MergedPages, parse_page
from vigil.telemetry.export.prometheus import prometheus_name
from vigil.telemetry.metrics.instruments import WORKER_READY, WORKER_RESTARTS

logger = logging.getLogger(__name__)

WORKER_LABEL = "worker"
"""The label that tells the workers' gauges apart on the host's page."""

SCRAPE_TIMEOUT_SECONDS = 5.0
"""How long the host's /metrics waits for each worker's page."""

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                         "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding",
                         "content-encoding"})
"""Headers that belong to one connection, not to the request or answer passed on (compression included: the
answer is passed on as the worker sent it, uncompressed)."""


@dataclass(frozen=True)
class WorkerState:
    """One worker as the front sees it."""

    index: int
    generation: int
    """Numbers the processes the supervisor started, from 1: a restarted worker is a new generation."""
    socket_path: str
    running: bool
    listening: bool
    ready: bool
    """It serves (listening, models loaded, not draining)."""
    restarts: int


class Workers(Protocol):
    """What the front reads from the supervisor."""

    @property
    def is_ready(self) -> bool: ...

    def states(self) -> Sequence[WorkerState]: ...


class Front:
    """The aiohttp app of the host's HTTP port, over the supervisor's workers.

    >>> front = Front(supervisor, access)
    >>> server = WebServer(front.app, host, port)
    >>> front.retire(generation)   # a worker died: its last totals are carried forward
    """

    def __init__(self, workers: Workers, access: HttpAccess | None) -> None:
        self._workers = workers
        self._merged = MergedPages(label=WORKER_LABEL)
        self._last: dict[int, list[Metric]] = {}
        """The totals each worker process (by generation) last reported: used when a scrape finds it not
        answering, and carried forward once it has ended."""
        self._retired: set[int] = set()
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._closing: set[asyncio.Task[None]] = set()
        middlewares = [access.middleware()] if access is not None and access.required else []
        self.app = web.Application(middlewares=middlewares)
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_route("*", "/{tail:.*}", self._pass_on)
        self.app.on_cleanup.append(self._close_sessions)

    def retire(self, generation: int) -> None:
        """A worker process has ended: its last totals stay in the host's (a new process counts from zero)."""
        self._retired.add(generation)
        self._merged.retire(self._last.pop(generation, []))

    def forget_socket(self, socket_path: str) -> None:
        """The process behind `socket_path` has ended: its connections go with it."""
        session = self._sessions.pop(socket_path, None)
        if session is not None:
            task = asyncio.get_running_loop().create_task(session.close())
            self._closing.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._closing.discard)

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        states = [s for s in self._workers.states() if s.listening and s.running]
        pages = await asyncio.gather(*(self._scrape(s) for s in states))
        fresh: dict[str, list[Metric]] = {}
        for state, page in zip(states, pages, strict=True):
            if state.generation in self._retired:  # ended while being read: its totals are carried already
                continue
            if page is None:  # not answering right now: its totals as last read, so the host's do not drop
                page = self._last.get(state.generation, [])
            else:
                self._last[state.generation] = [m for m in page if m.type in SUMMED_TYPES]
            fresh[str(state.index)] = page
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FamiliesCollector([*self._merged.merge(fresh), *self._own_families()]))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def _scrape(self, state: WorkerState) -> list[Metric] | None:
        try:
            async with self._session(state.socket_path).get(
                    "http://worker/metrics", headers={"Accept": OPENMETRICS},
                    timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS)) as response:
                response.raise_for_status()
                text = await response.text()
            return parse_page(text)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.warning("could not read the metrics of worker %d: %s", state.index, exc)
            return None

    def _own_families(self) -> Iterator[Metric]:
        states = self._workers.states()
        restarts = CounterMetricFamily(prometheus_name(WORKER_RESTARTS.name, WORKER_RESTARTS.unit, counter=True),
                                       WORKER_RESTARTS.description, labels=[WORKER_LABEL])
        ready = GaugeMetricFamily(prometheus_name(WORKER_READY.name, WORKER_READY.unit, counter=False),
                                  WORKER_READY.description, labels=[WORKER_LABEL])
        for state in states:
            restarts.add_metric([str(state.index)], state.restarts)
            ready.add_metric([str(state.index)], 1.0 if state.ready else 0.0)
        yield restarts
        yield ready

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._workers.is_ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _pass_on(self, request: web.Request) -> web.StreamResponse:
        """Any other path: answered by the first ready worker (the lowest-numbered, so that a viewer sees one
        worker's pages from one request to the next), or any listening one."""
        states = [s for s in self._workers.states() if s.listening and s.running]
        target = next((s for s in states if s.ready), states[0] if states else None)
        if target is None:
            return web.Response(status=503, text="no worker is serving yet\n")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await request.read() if request.can_read_body else None
        response: web.StreamResponse | None = None
        try:
            async with self._session(target.socket_path).request(
                    request.method, f"http://worker{request.rel_url}", headers=headers, data=body,
                    allow_redirects=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as upstream:
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():  # a stream (the dashboard's) goes on as it comes
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, ConnectionError) as exc:
            logger.warning("worker %d did not answer %s: %s", target.index, request.path, exc)
            if response is not None:  # cut off part way: the viewer's connection ends with it
                return response
            return web.Response(status=502, text=f"worker {target.index} did not answer\n")

    def _session(self, socket_path: str) -> aiohttp.ClientSession:
        session = self._sessions.get(socket_path)
        if session is None or session.closed:
            session = self._sessions[socket_path] = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=socket_path), auto_decompress=False)
        return session

    async def _close_sessions(self, app: web.Application) -> None:
        for session in self._sessions.values():
            with contextlib.suppress(Exception):
                await session.close()
        self._sessions.clear()
