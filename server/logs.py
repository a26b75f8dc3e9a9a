"""Logging set-up for the server process."""

from __future__ import annotations

import logging
import sys

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
