"""Logging set-up for the server process."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """Send the server's log to stderr at `level`, one line per record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
