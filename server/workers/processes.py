"""The supervisor's side of its workers: the gRPC port they share, and one slot per worker holding its current
process, the pipe to it, and what it said."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, MutableSequence
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess

from vigil.server.settings import Settings
from vigil.server.workers.worker import LISTENING, NOT_READY, WorkerSeat, run_worker

logger = logging.getLogger(__name__)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT that never listens: it holds the port (port 0 picks one) for
    the workers, which bind it too, for as long as the supervisor runs. Only listening sockets are handed
    connections, so it takes none.

    The port is first bound without SO_REUSEPORT, which fails if anything holds it: another server of the same
    user (a second `vigil serve --workers`) would otherwise share it silently and take half the connections."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.bind(address)  # OSError (EADDRINUSE) for a port in use, whoever holds it
        address = probe.getsockname()  # port 0: the free port chosen
    reserved = socket.socket(family, kind, proto)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind(address)
    except OSError:
        reserved.close()
        raise
    return reserved


class WorkerSlot:
    """Worker number `index`: its current process (a new one after each restart) and the pipe to it.

    >>> slot = WorkerSlot(0, context, settings, ready, "/run/vigil/worker-0.sock", itertools.count(1),
    ...                   on_exit=restart_later)
    >>> slot.start()
    >>> await slot.listening.wait()
    """

    def __init__(self, index: int, context: SpawnContext, settings: Settings, ready: MutableSequence[int],
                 socket_path: str, numbers: Iterator[int], *, on_exit: Callable[[WorkerSlot, int], None]) -> None:
        self.index = index
        self.socket_path = socket_path
        self.restarts = 0
        """Times this worker was started again after it died."""
        self.started_at = 0.0
        """`time.monotonic()` when the current process started."""
        self.listening = asyncio.Event()
        """Set once the current process serves gRPC and its HTTP socket."""
        self.process: SpawnProcess | None = None
        self.pid = 0
        """The process id of the current process (or of the last one, once it has ended)."""
        self.generation = 0
        """The current process's number among all the processes the supervisor started (a restart is new)."""
        self._numbers = numbers
        self._context = context
        self._settings = settings
        self._ready = ready
        self._on_exit = on_exit
        self._pipe: Connection | None = None

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.exitcode is None

    def start(self) -> None:
        """Start a new process for this slot (the previous one has ended)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        ours, theirs = self._context.Pipe(duplex=True)
        seat = WorkerSeat(self.index, self.socket_path, self._ready, theirs)
        process = self._context.Process(target=run_worker, args=(self._settings, seat),
                                        name=f"vigil-worker-{self.index}", daemon=True)
        self.listening = asyncio.Event()
        process.start()
        theirs.close()  # only the worker holds its end, so each side sees the other's end as end of file
        self.process, self._pipe, self.started_at = process, ours, time.monotonic()
        self.pid = process.pid or 0
        self.generation = next(self._numbers)
        loop.add_reader(ours.fileno(), self._on_message, ours)
        loop.add_reader(process.sentinel, self._on_end, process)
        logger.info("worker %d started (pid %d)", self.index, process.pid)

    def send(self, message: tuple[object, ...]) -> None:
        """Send to the current process, if it is there to read it."""
        if self._pipe is not None and self.is_running:
            with contextlib.suppress(OSError):
                self._pipe.send(message)

    def signal(self, signum: int) -> None:
        if self.is_running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def _on_message(self, pipe: Connection) -> None:
        try:
            while pipe.poll():
                message = pipe.recv()
                if message[0] == LISTENING:
                    self.listening.set()
        except (EOFError, OSError):  # the process is ending; its sentinel says when it has
            asyncio.get_running_loop().remove_reader(pipe.fileno())

    def _on_end(self, process: SpawnProcess) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(process.sentinel)
        process.join()
        pipe = self._pipe
        if pipe is not None:
            loop.remove_reader(pipe.fileno())
            pipe.close()
            self._pipe = None
        self._ready[self.index] = NOT_READY  # it cannot say so itself if it was killed
        code = process.exitcode if process.exitcode is not None else -1
        process.close()
        self.process = None
        self._on_exit(self, code)
