"""`vigil serve --workers N`: a supervisor process that runs N workers on one gRPC port and serves the host's
HTTP port.

The supervisor never creates a gRPC server or channel. It holds the gRPC port (`reserve_port`) and starts each
worker with the spawn method, a fresh interpreter, as gRPC's guidance for several processes requires. It then
serves the host's HTTP port (`front`). A worker that dies is started again after a delay that grows while
workers keep dying soon after they start. The event is logged, counted (`vigil_worker_restarts_total`) and sent
to the other workers' Telemetry streams. On SIGTERM or SIGINT every worker is told to drain, and drains under the
usual grace rules. A second signal makes the workers, and then the supervisor, exit at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vigil.protos.vigil.v1.telemetry_pb2 import TelemetryEvent
from vigil.server.app import SHUTDOWN_MARGIN_SECONDS, announce_line
from vigil.server.monitoring import open_configured_store
from vigil.server.security.credentials import http_ssl_context, token_table
from vigil.server.settings import Settings
from vigil.server.web.http_port import HttpAccess, WebServer
from vigil.server.workers.front import Front, WorkerState
from vigil.server.workers.processes import WorkerSlot, reserve_port
from vigil.server.workers.worker import EVENT, NOT_READY, REPORTING_READY, STOP

logger = logging.getLogger(__name__)

FIRST_RESTART_SECONDS = 0.1
"""Delay before starting again a worker that had been running a while."""
MAX_RESTART_SECONDS = 30.0
"""The longest delay, reached by doubling while a worker keeps dying soon after it starts."""
STEADY_SECONDS = 60.0
"""A worker that ran this long before it died is restarted after the first delay again."""


class WorkersFailed(Exception):
    """A worker ended before every worker was listening: the host cannot start as configured."""

    def __init__(self, index: int, code: int) -> None:
        super().__init__(f"worker {index} {_ending(code)} while starting")
        self.code = code


class Supervisor:
    """N worker processes serving one gRPC port, and the host's HTTP port over them.

    >>> supervisor = Supervisor(Settings(workers=2, grpc_port=0, http_port=0))
    >>> await supervisor.start()       # port held, workers listening, HTTP port open
    >>> supervisor.drain(); await supervisor.wait_ended(grace)
    >>> await supervisor.close()
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.count = settings.worker_count
        self.grpc_port = 0
        self.http_port = 0
        self._context = multiprocessing.get_context("spawn")
        self._ready = self._context.RawArray("b", self.count)
        self._folder = ""
        self._numbers = itertools.count(1)
        self.slots: list[WorkerSlot] = []
        self._draining = False
        self._started = False
        self._failed: asyncio.Future[WorkersFailed] | None = None
        self._ended = asyncio.Event()
        self._delays = [FIRST_RESTART_SECONDS] * self.count
        self._pending: dict[int, asyncio.TimerHandle] = {}
        security = settings.security
        self.front = Front(self, HttpAccess(token_table(security), frozenset(security.open_http_paths),
                                            mutual_tls=security.client_ca_file is not None))
        self._web: WebServer | None = None
        self._reserved: socket.socket | None = None
        self.clean = True
        """Every worker that ended while draining exited with status 0."""

    @property
    def is_ready(self) -> bool:
        """Every worker serves (listening, models loaded, not draining), and its health says so."""
        return not self._draining and bool(self.slots) and all(
            s.is_running and self._ready[s.index] == REPORTING_READY for s in self.slots)

    def states(self) -> Sequence[WorkerState]:
        return [WorkerState(s.index, s.generation, s.socket_path, s.is_running, s.listening.is_set(),
                            s.is_running and self._ready[s.index] != NOT_READY, s.restarts) for s in self.slots]

    async def start(self) -> None:
        """Hold the gRPC port, start every worker and wait until all listen, then open the HTTP port. Raises
        WorkersFailed when a worker ends first (its exit status says why)."""
        loop = asyncio.get_running_loop()
        self._failed = loop.create_future()
        await self._prepare_store()
        if self._draining:  # told to stop while the store opened
            return
        reserved = reserve_port(self.settings.host, self.settings.grpc_port)
        self._reserved = reserved
        self.grpc_port = int(reserved.getsockname()[1])
        self._folder = tempfile.mkdtemp(prefix="vigil-workers-")  # readable by this user alone
        settings = self.settings.model_copy(update={"grpc_port": self.grpc_port})
        self.slots = [WorkerSlot(i, self._context, settings, self._ready, str(Path(self._folder) / f"worker-{i}.sock"),
                                 self._numbers, on_exit=self._on_exit) for i in range(self.count)]
        for slot in self.slots:
            slot.start()
        listening: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(s.listening.wait() for s in self.slots)))
        await asyncio.wait([listening, self._failed], return_when=asyncio.FIRST_COMPLETED)
        if self._failed.done():
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            raise self._failed.result()
        if self._draining:  # told to stop while starting: nothing more to open
            return
        self._started = True
        security = self.settings.security
        self._web = WebServer(self.front.app, self.settings.host, self.settings.http_port,
                              ssl_context=http_ssl_context(security))
        await self._web.start()
        self.http_port = self._web.port
        logger.info("%d workers listening on %s:%d (HTTP on %s:%d)", self.count, self.settings.host, self.grpc_port,
                    self.settings.host, self.http_port)

    async def _prepare_store(self) -> None:
        """Open the store once and bring its schema up to date before any worker opens it: two processes that
        open a new SQLite file at the same moment can find it locked while one of them sets it up. A store that
        cannot be opened stops the start here (StoreError), before any worker runs."""
        settings = self.settings
        if not self._one_fleet:
            logger.warning("the workers share no fleet (store %s, fleet %s): each judges alert rules and rollouts "
                           "on its own share of the calls, and the dashboard and report show one worker; use a "
                           "SQLite file or PostgreSQL with the fleet on",
                           "memory" if settings.store.url.get_secret_value() == "memory" else "set",
                           "on" if settings.fleet.enabled else "off")
        if settings.store.url.get_secret_value() == "memory" or not (settings.quality.enabled or
                                                                      settings.fleet.enabled):
            return  # each worker keeps its own
        store = await asyncio.to_thread(open_configured_store, settings.store)
        await asyncio.to_thread(store.close)

    @property
    def _one_fleet(self) -> bool:
        """Whether the workers are members of one fleet (a shared store, the fleet on)."""
        settings = self.settings
        return settings.store.url.get_secret_value() != "memory" and settings.fleet.enabled

    def drain(self) -> None:
        """Stop restarting workers, and tell each to stop: they refuse new calls at once and drain."""
        self._draining = True
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        for slot in self.slots:
            slot.send((STOP, False))
        self._check_ended()

    def stop_at_once(self) -> None:
        """Tell each worker to exit without waiting for its calls (this process is about to exit too)."""
        for slot in self.slots:
            slot.send((STOP, True))
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)

    async def wait_ended(self, timeout: float) -> None:
        """Wait for every worker to end after `drain`; any still running after `timeout` seconds is killed (and
        `clean` turns False)."""
        try:
            await asyncio.wait_for(self._ended.wait(), timeout)
        except TimeoutError:
            logger.error("workers still running %.0fs after the signal; killing them", timeout)
            self.clean = False
            for slot in self.slots:
                slot.signal(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), 5.0)

    async def close(self) -> None:
        """Close the HTTP port and give the gRPC port and the workers' socket folder back."""
        if self._web is not None:
            await self._web.stop()
        if self._reserved is not None:
            self._reserved.close()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _on_exit(self, slot: WorkerSlot, code: int) -> None:
        self.front.retire(slot.generation)
        self.front.forget_socket(slot.socket_path)
        if self._draining:
            level = logging.INFO if code == 0 else logging.WARNING
            logger.log(level, "worker %d (pid %d) %s", slot.index, slot.pid, _ending(code))
            self.clean = self.clean and code == 0
            self._check_ended()
            if not self._started and self._failed is not None and not self._failed.done():
                self._failed.set_result(WorkersFailed(slot.index, code))  # `start` waits no longer
            return
        if not self._started:
            if self._failed is not None and not self._failed.done():
                self._failed.set_result(WorkersFailed(slot.index, code))
            return
        slot.restarts += 1
        ran = time.monotonic() - slot.started_at
        if ran >= STEADY_SECONDS:
            self._delays[slot.index] = FIRST_RESTART_SECONDS
        delay = self._delays[slot.index]
        self._delays[slot.index] = min(delay * 2, MAX_RESTART_SECONDS)
        message = (f"worker {slot.index} (pid {slot.pid}) {_ending(code)} after {ran:.1f}s; starting it again in "
                   f"{delay:.1f}s (restart {slot.restarts})")
        logger.warning("%s", message)
        # in one fleet, one other worker raises the event and the fleet relays it to every stream; else each
        # worker's stream is its own
        others = [other for other in self.slots if other is not slot]
        for other in others[:1] if self._one_fleet else others:
            other.send((EVENT, TelemetryEvent.WORKER_RESTARTED, message))
        self._pending[slot.index] = asyncio.get_running_loop().call_later(delay, self._restart, slot)

    def _restart(self, slot: WorkerSlot) -> None:
        self._pending.pop(slot.index, None)
        if self._draining:
            return
        try:
            slot.start()
        except Exception:  # e.g. out of memory or file descriptors: try again later, as after a death
            delay = self._delays[slot.index]
            self._delays[slot.index] = min(delay * 2, MAX_RESTART_SECONDS)
            logger.exception("could not start worker %d again; trying in %.1fs", slot.index, delay)
            self._pending[slot.index] = asyncio.get_running_loop().call_later(delay, self._restart, slot)

    def _check_ended(self) -> None:
        if self._draining and not any(s.is_running for s in self.slots):
            self._ended.set()


def _ending(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


async def supervise(settings: Settings) -> int:
    """Run the workers until SIGINT or SIGTERM, then let them drain within the grace period and return 0 (1 when
    a worker did not finish cleanly); a second signal exits at once (status 128 + signal number)."""
    supervisor = Supervisor(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            supervisor.stop_at_once()
            sys.stderr.write(f"vigil: {name} again: exiting without waiting for calls\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        logger.info("%s: draining %d workers for up to %.1fs (a second signal exits at once)", name,
                    supervisor.count, settings.shutdown_grace_seconds)
        stop.set()
        supervisor.drain()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    limit = settings.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS
    try:
        try:
            await supervisor.start()
        except WorkersFailed as failed:
            if not stop.is_set():
                logger.critical("cannot start: %s", failed)
                supervisor.drain()
                await supervisor.wait_ended(limit)
                return failed.code if failed.code > 0 else 1
        except BaseException:  # e.g. the HTTP port in use: the workers started go too
            supervisor.drain()
            await supervisor.wait_ended(limit)
            raise
        if not stop.is_set():
            announce_line(f"gRPC listening on {settings.host}:{supervisor.grpc_port}")
            announce_line(f"HTTP listening on {settings.host}:{supervisor.http_port}")
        await stop.wait()
        await supervisor.wait_ended(limit)
    finally:
        await supervisor.close()
    logger.info("stopped")
    return 0 if supervisor.clean else 1
