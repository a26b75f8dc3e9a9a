"""Logging set-up for the server process: one log, in one format, on stdout. What native code writes to the
process's standard error (ONNX Runtime's own logger, anything else in C or C++) is read back line by line and logged
through the same handler, so a log file holds only JSON lines (or only text lines) without terminal colours."""

from __future__ import annotations

import faulthandler
import logging
import os
import re
import sys
import threading

from vigil.telemetry.export.json_logs import JsonFormatter


def configure_logging(level: str, log_format: str = "json") -> None:
    """Send the server's log to stdout at `level`: JSON lines correlated with traces, or plain text."""
    handler = logging.StreamHandler(sys.stdout)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.raiseExceptions = False  # a failing handler must not write to stderr, which is read back into the log


NATIVE_LINE = re.compile(r"^(?:\S+ \S+ )?\[([VIWEF]):onnxruntime:[^\]]*\] (.*)$")
"""ONNX Runtime's log line: "2026-12-03 14:05:01.123 [W:onnxruntime:, graph.cc:3490 Cleanup...] message"."""
COLOURS = re.compile(r"\x1b\[[0-9;]*m")
NATIVE_LEVELS = {"V": logging.DEBUG, "I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR,
                 "F": logging.CRITICAL}


def route_standard_error() -> None:
    """Point file descriptor 2 at a pipe whose lines become log records: ONNX Runtime's under the logger
    `onnxruntime` at their own level, anything else under `stderr` at WARNING. A crash's traceback (faulthandler)
    still goes to the original standard error, since no thread may be left to relay it."""
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    faulthandler.enable(file=os.fdopen(original, "w", closefd=False))
    threading.Thread(target=_relay, args=(read_end,), name="vigil-stderr", daemon=True).start()


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
                logging.getLogger("stderr").warning(text)
