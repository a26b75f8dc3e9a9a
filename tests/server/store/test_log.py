"""The writer between serving and the store: a flush waits for what was queued before it, whatever is dropped
after; close writes what it can and counts the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vigil.server.store.base import Annotation
from vigil.server.store.log import PredictionLog
from vigil.server.store.sqlite import SqliteStore
from vigil.telemetry.quality.outcomes import LoggedPrediction


class HeldStore(SqliteStore):
    """A real SQLite store whose writes wait until `release` is set: a store that has become slow."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, retention_days=30)
        self.migrate()
        self.register("m", "1", ["a", "b"])
        self.release = threading.Event()

    def write(self, predictions: Sequence[LoggedPrediction], annotations: Sequence[Annotation] = ()) -> Any:
        self.release.wait(30)
        return super().write(predictions, annotations)


def logged(i: int) -> LoggedPrediction:
    return LoggedPrediction(f"r{i}", time.time(), "m", "1", False, np.array([0]), np.array([0.9], np.float32))


def count(store: SqliteStore) -> int:
    with store.transaction(write=False) as tx:
        return int(tx.execute("SELECT count(*) FROM predictions").fetchone()[0])


def test_a_flush_waits_for_what_was_queued_before_it(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "v.db")
    dropped: list[int] = []
    log = PredictionLog(store, max_queued=10, batch_size=5, on_dropped=dropped.append)
    log.start()
    log.log([logged(i) for i in range(10)])
    flushed: list[bool] = []
    flusher = threading.Thread(target=lambda: flushed.append(log.flush(30)))
    flusher.start()
    time.sleep(0.2)
    log.log([logged(i) for i in range(10, 30)])  # the queue is full: these are dropped at once
    time.sleep(0.2)
    assert not flushed and sum(dropped) > 0  # drops after the flush began do not end it
    store.release.set()
    flusher.join(30)
    assert flushed == [True] and count(store) >= 10
    assert all(f"r{i}" in {r.request_id for r in rows(store)} for i in range(10))
    log.close(5)
    assert log.written + log.dropped == 30


def rows(store: SqliteStore) -> list[Any]:
    with store.transaction(write=False) as tx:
        return store._lock_rows(tx, [f"r{i}" for i in range(30)])


def test_an_annotation_before_its_prediction_goes_into_its_row(tmp_path: Path) -> None:
    store = HeldStore(tmp_path / "v.db")
    store.release.set()
    log = PredictionLog(store, max_queued=100, batch_size=100)
    log.start()
    log.annotate("r1", client_id="case-1", subject_hash="hash-1")
    assert log.flush(10)
    log.log([logged(1)])
    log.annotate("r1", subject_hash="hash-2")  # after the row: an update, which keeps the caller's id
    log.close(10)
    [row] = rows(store)
    assert row.client_id == "case-1"
    assert store.forget("hash-2").predictions == 1
