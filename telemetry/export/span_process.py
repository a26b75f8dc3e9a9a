"""The serving side of the span exporter process: spans go out as compact records through a pipe.

`ExporterProcess` starts `python -m vigil.telemetry.export.span_exporter`, keeps a bounded buffer of records, and
a daemon thread writes the buffer to the process every `flush_seconds` (the write releases the interpreter lock;
packing is one `marshal` call per batch). A process that dies is restarted with backoff (0.1 s doubling to 30 s)
and counted; records that find the buffer full, or that were in a batch the process could not take, are counted
as dropped. A call never waits for any of this.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, TraceFlags

from vigil.telemetry.calls.spans import UNSET
from vigil.telemetry.export.span_records import HELLO, KEPT, SAMPLED, Record, frame, record, state_header

logger = logging.getLogger(__name__)

_SAMPLED = int(TraceFlags.SAMPLED)
COMMAND = (sys.executable, "-m", "vigil.telemetry.export.span_exporter")


class ExporterProcess:
    """One span exporter process and the buffer in front of it.

    >>> process = ExporterProcess(resource)
    >>> process.start()
    >>> tracing = CallTracing(sampler, process.writer(SAMPLED), process.writer(KEPT))
    >>> process.stop(timeout=5.0)      # flushes, then closes the pipe and waits for the exporter to finish
    """

    def __init__(self, resource: Resource, *, max_buffered: int = 8192, flush_seconds: float = 0.05,
                 command: Sequence[str] = COMMAND) -> None:
        self._resource = resource
        self._max = max_buffered
        self._flush_seconds = flush_seconds
        self._command = list(command)
        self._buffers: dict[int, list[Record]] = {SAMPLED: [], KEPT: []}
        self._buffered = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._backoff = 0.1
        self._next_start = 0.0
        self.restarts = 0
        """Times the process was started again after it died."""
        self.dropped = 0
        """Spans that never reached the process: the buffer was full, or the process died holding them."""
        self.sent = 0
        """Spans handed to the process."""

    def writer(self, queue: int) -> PipeWriter:
        """The span writer for `SAMPLED` or `KEPT` spans."""
        return PipeWriter(self, queue)

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._run, name="vigil-span-pipe", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def add(self, queue: int, item: Record) -> None:
        """Buffer one record (never blocks; counted as dropped when the buffer is full)."""
        with self._lock:
            if self._buffered >= self._max or self._stopping:
                self.dropped += 1
                return
            self._buffers[queue].append(item)
            self._buffered += 1

    def _spawn(self) -> None:
        try:
            self._process = subprocess.Popen(self._command, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                             env=os.environ.copy())
            assert self._process.stdin is not None and self._process.stderr is not None
            threading.Thread(target=relay_logs, args=(self._process.stderr,), name="vigil-span-exporter-logs",
                             daemon=True).start()
            self._process.stdin.write(frame(HELLO, {str(k): v for k, v in self._resource.attributes.items()}))
            self._process.stdin.flush()
        except OSError:
            logger.exception("the span exporter process could not be started")
            self._process = None

    def _alive(self) -> IO[bytes] | None:
        """The pipe to a running exporter, restarting a dead one when its backoff has passed; None while down."""
        process = self._process
        if process is not None and process.poll() is None and process.stdin is not None:
            return process.stdin
        now = time.monotonic()
        if now < self._next_start:
            return None
        if process is not None:
            logger.warning("the span exporter process exited (code %s); starting it again", process.returncode)
            _close(process.stdin)
            self.restarts += 1
            self._next_start = now + self._backoff
            self._backoff = min(self._backoff * 2, 30.0)
        self._spawn()
        process = self._process
        return process.stdin if process is not None and process.stdin is not None else None

    def _take(self) -> dict[int, list[Record]]:
        with self._lock:
            taken, self._buffers = self._buffers, {SAMPLED: [], KEPT: []}
            self._buffered = 0
        return taken

    def _send(self) -> None:
        taken = self._take()
        count = sum(len(v) for v in taken.values())
        if not count:
            return
        pipe = self._alive()
        if pipe is None:
            self.dropped += count
            return
        try:
            for queue, items in taken.items():
                if items:
                    pipe.write(frame(queue, items))
            pipe.flush()
            self.sent += count
            self._backoff = 0.1
        except (OSError, ValueError):  # the process died while we wrote: what it did not take is lost
            self.dropped += count

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._flush_seconds)
            self._send_logged()
        self._send_logged()  # what was buffered when stopping began

    def _send_logged(self) -> None:
        try:
            self._send()
        except Exception:
            logger.exception("handing spans to the exporter process failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is buffered, close the pipe and wait `timeout` seconds at most for the exporter to flush and
        exit (then kill it). Never raises."""
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        process = self._process
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and process is not None:  # stuck writing to an exporter that does not read
                logger.warning("the span exporter process stopped taking spans; stopped")
                process.kill()
                self._thread.join(1.0)
        if process is None:
            return
        try:
            _close(process.stdin)
            process.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            logger.warning("the span exporter process did not finish within %.1fs; stopped", timeout)
            process.kill()
            process.wait()
        except OSError:
            process.kill()
            process.wait()


def _close(pipe: IO[bytes] | None) -> None:
    """Close a pipe to a process that may be gone (what it did not take is lost anyway)."""
    if pipe is not None:
        try:
            pipe.close()
        except OSError:
            pass


def relay_logs(stream: IO[bytes]) -> None:
    """Log the exporter process's log lines (JSON, one a line) through this process's logging, until it exits."""
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        try:
            fields = json.loads(line)
            name, level, message = str(fields["logger"]), str(fields["level"]), str(fields["message"])
        except (ValueError, KeyError, TypeError):
            name, level, message = __name__, "WARNING", line
        if message:
            logging.getLogger(name).log(logging.getLevelNamesMapping().get(level, logging.WARNING), "%s", message)
    stream.close()


class PipeWriter:
    """Writes finished spans as records to an `ExporterProcess` (the interface of `calls.spans.SpanWriter`)."""

    def __init__(self, process: ExporterProcess, queue: int) -> None:
        self._process = process
        self._queue = queue

    def write(self, name: str, *, parent: SpanContext | None, start_ns: int, end_ns: int,
              attributes: Mapping[str, Any] | None = None, links: Sequence[Link] = (), status: Status = UNSET,
              kind: SpanKind = SpanKind.INTERNAL, context: SpanContext | None = None,
              events: Sequence[Event] = ()) -> None:
        if context is not None:
            trace_id, span_id, flags, state = (context.trace_id, context.span_id, int(context.trace_flags),
                                               state_header(context))
        else:  # a child of `parent`: a new span id, and no SpanContext object for it
            assert parent is not None
            trace_id, span_id = parent.trace_id, random.getrandbits(64) or 1
            flags, state = int(parent.trace_flags) | _SAMPLED, state_header(parent)
        self._process.add(self._queue, record(name, trace_id, span_id, flags, state, parent, start_ns, end_ns,
                                              attributes, links, status, kind, events))
