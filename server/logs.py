"""Logging set-up for the server process: one log, in one format, on stdout. What native code writes to the
process's standard error (ONNX Runtime's own logger, anything else in C or C++) is read back line by line and logged
through the same handler, so a log file holds only JSON lines (or only text lines) without terminal colours. Uncaught
exceptions in threads and Python's warnings are logged as records too."""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping

from vigil.telemetry.export.json_logs import JsonFormatter


def configure_logging(level: str, log_format: str = "json", fields: Mapping[str, object] | None = None) -> None:
    """Send the server's log to stdout at `level`: JSON lines correlated with traces, or plain text (to stderr when
    stdout is closed). `fields` go on every record, to tell apart processes that share the log (`worker`)."""
    handler = logging.StreamHandler(sys.stdout if sys.stdout is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        tags = "".join(f"{key}={value} " for key, value in (fields or {}).items())
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {tags}%(name)s %(message)s"))
    if fields:
        handler.addFilter(_FieldsFilter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.raiseExceptions = False  # a failing handler must not write to stderr, which is read back into the log
    logging.captureWarnings(True)
    threading.excepthook = _log_thread_exception


class _FieldsFilter(logging.Filter):
    """Adds the same fields to every record (a record's own fields win)."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        own = getattr(record, "fields", None)
        record.fields = {**self._fields, **own} if isinstance(own, dict) else self._fields
        return True


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("vigil.server").error("uncaught exception in %s", name, exc_info=args.exc_value)


NATIVE_LINE = re.compile(r"^(?:\S+ \S+ )?\[([VIWEF]):onnxruntime:[^\]]*\] (.*)$")
"""ONNX Runtime's log line: "2026-12-03 14:05:01.123 [W:onnxruntime:, graph.cc:3490 Cleanup...] message"."""
COLOURS = re.compile(r"\x1b\[[0-9;]*m")
NATIVE_LEVELS = {"V": logging.DEBUG, "I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR,
                 "F": logging.CRITICAL}


def route_standard_error() -> None:
    """Point file descriptor 2, where native code writes, at a pipe whose lines become log records: ONNX Runtime's
    under the logger `onnxruntime` at their own level, anything else under `native` at WARNING. Python's own
    standard error (`sys.stderr`: tracebacks, last words before an exit) stays on the original descriptor, and so do
    a crash's traceback (faulthandler) and anything native written after the relay stops at exit. Skipped when a log
    handler itself writes to descriptor 2, which would feed the log back into itself."""
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        try:
            if stream is not None and stream.fileno() == 2:
                return
        except (OSError, ValueError):
            continue
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = os.fdopen(original, "w", buffering=1, encoding="utf-8", errors="replace")
    faulthandler.enable(file=sys.stderr)
    relay = threading.Thread(target=_relay, args=(read_end,), name="vigil-stderr", daemon=True)
    relay.start()

    def stop() -> None:  # at exit: give descriptor 2 back, so the relay reads to the end of what was written
        os.dup2(original, 2)
        relay.join(timeout=2.0)

    atexit.register(stop)


def _relay(read_end: int) -> None:
    with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            text = COLOURS.sub("", line).rstrip()
            if not text:
                continue
            match = NATIVE_LINE.match(text)
            if match:
                logging.getLogger("onnxruntime").log(NATIVE_LEVELS[match.group(1)], match.group(2))
            else:
                logging.getLogger("native").warning(text)
