"""The audit log: one JSON line per prediction, per feedback and per model load or unload, in a file of its own.

A line says who (a keyed hash of the caller's identity), when, what (method, model, version, request id, trace
id), and how it ended (gRPC status, latency). It never holds inputs, outputs or clear subject ids. Lines are
formatted on the event loop and written by a thread of their own, so a slow disk never stalls a request; the file
is rotated by size.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigil.telemetry.quality.outcomes import subject_hash

logger = logging.getLogger(__name__)


class AuditLog:
    """Audit lines to `path`, rotated at `max_bytes` keeping `backup_count` older files.

    >>> audit = AuditLog(Path("audit.jsonl"), max_bytes=100 << 20, backup_count=10, identity_key=key)
    >>> audit.write(method="Predict", identity="dashboard", status="OK", latency_seconds=0.004, ...)
    >>> audit.close()                 # writes what is queued, then closes the file
    """

    def __init__(self, path: Path, *, max_bytes: int, backup_count: int, identity_key: bytes | None) -> None:
        if identity_key is None:
            identity_key = os.urandom(32)
            logger.warning("audit.identity_hash_key is not set: identities are hashed under a random key, so "
                           "audit lines of different runs cannot be matched by identity")
        self._key = identity_key
        self._hashes: dict[str, str] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count,
                                                             encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(self._queue, self._handler)
        self._listener.start()
        self.path = path

    def identity_hash(self, identity: str) -> str:
        """The keyed hash (HMAC-SHA256, hex) an identity is logged under."""
        hashed = self._hashes.get(identity)
        if hashed is None:
            if len(self._hashes) > 10_000:  # identities are few; a bound all the same
                self._hashes.clear()
            hashed = self._hashes[identity] = subject_hash(self._key, identity)
        return hashed

    def write(self, *, method: str, identity: str, status: str, latency_seconds: float, model: str = "",
              version: str = "", request_id: str = "", trace_id: str = "", peer: str = "",
              **fields: Any) -> None:
        """Queue one line (the file is written by the listener's thread)."""
        line: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "method": method,
            "identity": self.identity_hash(identity),
            "status": status,
            "latency_ms": round(latency_seconds * 1000.0, 3),
        }
        for key, value in (("model", model), ("version", version), ("request_id", request_id),
                           ("trace_id", trace_id), ("peer", peer)):
            if value:
                line[key] = value
        line.update(fields)
        record = logging.LogRecord("vigil.audit", logging.INFO, "", 0, json.dumps(line, ensure_ascii=False), None,
                                   None)
        self._queue.put(record)

    def close(self) -> None:
        """Write every queued line, then close the file."""
        self._listener.stop()
        self._handler.close()
