"""One worker process of `vigil serve --workers N`: the whole server (`App`) on the host's shared gRPC port, run
and stopped by its supervisor.

The supervisor starts it with `multiprocessing`'s spawn method, so the worker is a fresh interpreter that has never
seen a gRPC object of its parent (gRPC does not survive a fork once it has started). A pipe joins the two processes:
the worker says when it listens, the supervisor sends events for the Telemetry stream, and the pipe's end tells
the worker that its supervisor is gone. Each worker's readiness is a byte in shared memory that every worker reads,
so that the health of each worker reports the whole host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import MutableSequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from vigil.server.app import SHUTDOWN_MARGIN_SECONDS, App, WorkerRole
from vigil.server.logs import configure_logging, route_standard_error
from vigil.server.settings import Settings
from vigil.server.store.records import StoreError
from vigil.server.workers.trailer import worker_trailer

logger = logging.getLogger(__name__)

READY_POLL_SECONDS = 0.1
"""How often a worker publishes its own readiness and reads the other workers'."""

LISTENING = "listening"
EVENT = "event"
STOP = "stop"
"""Message kinds on the pipe: worker → supervisor `(LISTENING, grpc_port)`; supervisor → worker
`(EVENT, kind, message)`, a TelemetryEvent to publish, and `(STOP, at_once)`: drain, or exit without waiting."""


@dataclass(frozen=True)
class WorkerSeat:
    """What a worker gets from its supervisor when it starts (passed to the new process by `multiprocessing`)."""

    index: int
    http_socket: str
    """The Unix socket its HTTP app listens on, for the supervisor alone."""
    ready: MutableSequence[int]
    """One byte per worker in shared memory: NOT_READY, SERVING_HERE or REPORTING_READY."""
    pipe: Connection


NOT_READY, SERVING_HERE, REPORTING_READY = 0, 1, 2
"""A worker's readiness flag: it does not serve; it serves; it serves and its health reports the whole host
SERVING (every worker serves). The host is ready once every flag says REPORTING_READY, so that no worker's health
still says NOT_SERVING when the host's HTTP port says ready."""


class Peers:
    """Readiness shared by the workers of a host: each writes its own flag and reads the others'."""

    def __init__(self, flags: MutableSequence[int], index: int) -> None:
        self._flags = flags
        self._index = index

    def others_ready(self) -> bool:
        return all(flag != NOT_READY for i, flag in enumerate(self._flags) if i != self._index)

    def set_own(self, flag: int) -> None:
        self._flags[self._index] = flag


def run_worker(settings: Settings, seat: WorkerSeat) -> None:
    """The process's target: serve until the supervisor stops it; the exit status tells how it ended (0: drained;
    1: failed or stopped at once; 2: the store could not be opened)."""
    # Ctrl-C in a terminal reaches every process of the group; the supervisor passes it on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings.log_level, settings.telemetry.log_format, fields={"worker": seat.index})
    route_standard_error()
    try:
        code = asyncio.run(_serve(settings, seat))
    except StoreError as exc:
        logger.critical("cannot start: %s", exc)
        code = 2
    except Exception:
        logger.exception("worker %d failed", seat.index)
        code = 1
    sys.exit(code)


async def _serve(settings: Settings, seat: WorkerSeat) -> int:
    peers = Peers(seat.ready, seat.index)
    app = App(settings, worker=seat.index,
              role=WorkerRole(seat.http_socket, peers.others_ready, (worker_trailer(seat.index),)))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    orphaned = False

    def begin_stop(reason: str) -> None:
        if stop.is_set():
            return
        logger.info("%s: draining for up to %.1fs", reason, settings.shutdown_grace_seconds)
        stop.set()
        app.gate.draining = True  # refuse new calls from this moment, before the loop gets to `stop`

    def on_message() -> None:
        try:
            while seat.pipe.poll():
                message = seat.pipe.recv()
                if message[0] == STOP and message[1]:
                    _exit_now(seat.index, "told to exit without waiting for calls", 128 + signal.SIGTERM)
                elif message[0] == STOP:
                    begin_stop("the supervisor stops")
                elif message[0] == EVENT and app.telemetry_hub is not None:
                    app.telemetry_hub.publish(message[1], message=message[2])
        except (EOFError, OSError):  # the supervisor is gone: nobody would restart or stop this worker
            nonlocal orphaned
            orphaned = True
            loop.remove_reader(seat.pipe.fileno())
            begin_stop("the supervisor is gone")

    # Only the supervisor makes a worker exit at once: a SIGTERM sent to every process of the host (a process
    # group, systemd's control group) reaches each worker beside the supervisor's own message, and must count once.
    loop.add_signal_handler(signal.SIGTERM, begin_stop, "SIGTERM")
    loop.add_reader(seat.pipe.fileno(), on_message)
    readiness: asyncio.Task[None] | None = None
    try:
        await app.listen()
        seat.pipe.send((LISTENING, app.grpc_port))
        readiness = asyncio.create_task(_share_readiness(app, peers))
        await app.load_models()  # a stop meanwhile is acted on once loading ends (calls are refused already)
        await stop.wait()
        try:
            await asyncio.wait_for(app.stop(), timeout=settings.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS)
        except TimeoutError:
            _exit_now(seat.index, f"shutdown did not finish within the grace period plus "
                                  f"{SHUTDOWN_MARGIN_SECONDS:.0f}s; exiting now", 1)
    finally:
        peers.set_own(NOT_READY)
        if readiness is not None:
            readiness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await readiness
        if orphaned:  # nobody else will tidy the socket's folder: the last worker out removes it
            with contextlib.suppress(OSError):
                os.unlink(seat.http_socket)
                os.rmdir(os.path.dirname(seat.http_socket))
    logger.info("stopped")
    return 0


async def _share_readiness(app: App, peers: Peers) -> None:
    """Publish this worker's readiness and report the host's through health whenever either changes."""
    reported: bool | None = None
    while True:
        here = app.health.is_serving_here
        if not here:  # said first: the host is not ready from this moment
            peers.set_own(NOT_READY)
        serving = app.health.is_serving
        if serving != reported:
            await app.health.refresh()
            reported = serving
        peers.set_own(REPORTING_READY if serving else SERVING_HERE if here else NOT_READY)
        await asyncio.sleep(READY_POLL_SECONDS)


def _exit_now(index: int, reason: str, code: int) -> None:
    """Leave at once, without waiting for calls, threads or exporters."""
    sys.stderr.write(f"vigil worker {index}: {reason}\n")
    sys.stderr.flush()
    os._exit(code)
