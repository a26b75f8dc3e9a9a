"""The SQLite backend: one file in WAL mode that every Vigil process on the host shares (or, for tests only, a
database in memory that is lost when the process ends). Each thread has its own connection; a writing transaction
takes the database's write lock (`BEGIN IMMEDIATE`), so processes logging and joining at once take turns."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vigil.server.store.aggregates import BUCKETS_PER_DAY, UNBOUNDED, Deltas, Sums
from vigil.server.store.base import Annotation, Row, Store, Tx, chunks
from vigil.server.store.records import StoreError

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits for another process's write lock before giving up."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the prediction log, the versions' labels, the quality aggregates, stored secrets
        """CREATE TABLE predictions (
            request_id TEXT PRIMARY KEY, client_id TEXT, at REAL NOT NULL, model TEXT NOT NULL,
            version TEXT NOT NULL, shadow INTEGER NOT NULL, predicted TEXT NOT NULL, top BLOB NOT NULL,
            probabilities BLOB, subject_hash TEXT, truth TEXT, labelled_at REAL)""",
        "CREATE INDEX predictions_client_id ON predictions (client_id) WHERE client_id IS NOT NULL",
        "CREATE INDEX predictions_labelled ON predictions (model, version, at) WHERE truth IS NOT NULL",
        """CREATE TABLE model_versions (model TEXT NOT NULL, version TEXT NOT NULL, labels TEXT NOT NULL,
            PRIMARY KEY (model, version))""",
        """CREATE TABLE quality_bins (model TEXT NOT NULL, version TEXT NOT NULL, bucket INTEGER NOT NULL,
            bin INTEGER NOT NULL, rows INTEGER NOT NULL, confidence REAL NOT NULL, labelled INTEGER NOT NULL,
            labelled_confidence REAL NOT NULL, correct INTEGER NOT NULL, PRIMARY KEY (model, version, bucket, bin))""",
        """CREATE TABLE confusion (model TEXT NOT NULL, version TEXT NOT NULL, bucket INTEGER NOT NULL,
            true_class INTEGER NOT NULL, predicted_class INTEGER NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (model, version, bucket, true_class, predicted_class))""",
        """CREATE TABLE label_delays (model TEXT NOT NULL, version TEXT NOT NULL, bucket INTEGER NOT NULL,
            bin INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (model, version, bucket, bin))""",
        "CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    ),
    (  # 2: indexes for erasure by subject and for the retention purge
        "CREATE INDEX predictions_subject ON predictions (subject_hash) WHERE subject_hash IS NOT NULL",
        "CREATE INDEX predictions_at ON predictions (at)",
    ),
    (  # 3: what the members of a fleet share: their summaries, the leader's lease, shared values, report minutes
        """CREATE TABLE fleet_members (member TEXT PRIMARY KEY, started REAL NOT NULL, seen REAL NOT NULL,
            summary TEXT NOT NULL)""",
        "CREATE TABLE fleet_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL)",
        "CREATE TABLE shared_values (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated REAL NOT NULL)",
        """CREATE TABLE history_minutes (member TEXT NOT NULL, minute INTEGER NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (minute, member))""",
    ),
)

_ROW = "request_id, at, model, version, predicted, top, truth, labelled_at, client_id"
_PARAMS = 500
"""Ids per IN (...) list, under SQLite's limit on bound parameters."""


def _journal_mode_wal(connection: sqlite3.Connection) -> str:
    """Put the file in WAL mode (a no-op once it is); the journal mode that results. Changing the mode takes the
    file's lock without waiting for it (SQLite calls no busy handler for it), so processes opening a new file at
    the same moment retry here, for up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class _ThreadConnection:
    """One thread's connection, closed once nothing refers to it: when its thread ends, so that short-lived threads
    (a write under a time limit, a report read) leave no open file behind."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


def _row(values: Sequence[Any]) -> Row:
    return Row(*values)


class SqliteStore(Store):
    """The prediction log in a SQLite file (or, with `path=None`, in memory)."""

    migrations = MIGRATIONS

    def __init__(self, path: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.name = f"sqlite:///{path}" if path is not None else "memory"
        self._local = threading.local()
        self._owned: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        """Every thread's connection: each is closed when its thread ends (the thread's locals go) or at close."""
        self._shared_lock = threading.RLock()
        self._shared: sqlite3.Connection | None = None
        if path is None:  # one connection for every thread, taken in turn
            self._shared = self._open(":memory:")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of the SQLite store {path}: {exc}") from None
            self._connection()  # fail at start on a file that cannot be opened

    def _open(self, target: str) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(target, isolation_level=None, check_same_thread=False,
                                         timeout=BUSY_TIMEOUT_MS / 1000)
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if target != ":memory:":
                mode = _journal_mode_wal(connection)
                if mode != "wal":
                    raise sqlite3.OperationalError(f"journal mode is {mode}, not wal")
                connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(self._explain(exc)) from None
        return connection

    def _explain(self, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "readonly" in text or "read-only" in text:
            return f"the SQLite store {self.path} is read-only: {text} (give Vigil write access to it and its folder)"
        if "not a database" in text or "malformed" in text:
            return f"the SQLite store {self.path} is not a readable SQLite database ({text}): restore or move it"
        return f"the SQLite store {self.name} cannot be used: {text}"

    def _connection(self) -> sqlite3.Connection:
        owned: _ThreadConnection | None = getattr(self._local, "owned", None)
        if owned is None:
            owned = self._local.owned = _ThreadConnection(self._open(str(self.path)))
            self._owned.add(owned)
        return owned.connection

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Tx]:
        if self._shared is not None:
            with self._shared_lock:
                yield from self._in_transaction(self._shared, write)
        else:
            yield from self._in_transaction(self._connection(), write)

    def _in_transaction(self, connection: sqlite3.Connection, write: bool) -> Iterator[Tx]:
        cursor = connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(self._explain(exc)) from None
        try:
            yield cursor
        except sqlite3.Error as exc:
            connection.rollback()
            raise StoreError(self._explain(exc)) from None
        except BaseException:
            connection.rollback()
            raise
        try:
            cursor.execute("COMMIT")
        except sqlite3.Error as exc:
            connection.rollback()
            raise StoreError(self._explain(exc)) from None

    def close(self) -> None:
        for owned in list(self._owned):
            owned.connection.close()
        if self._shared is not None:
            self._shared.close()

    # -- schema --------------------------------------------------------------------------------------------------

    def _lock_schema(self, tx: Tx) -> None:
        pass  # BEGIN IMMEDIATE already holds the write lock

    def _schema_version(self, tx: Tx) -> int:
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = tx.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _set_schema_version(self, tx: Tx, version: int) -> None:
        tx.execute("DELETE FROM schema_version")
        tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def _run(self, tx: Tx, statement: str) -> None:
        tx.execute(statement)

    # -- writes --------------------------------------------------------------------------------------------------

    def _insert(self, tx: Tx, rows: list[tuple[Any, ...]]) -> set[str]:
        logged = self._existing(tx, [row[0] for row in rows])
        fresh, seen = [], set()
        for row in rows:
            if row[0] not in logged and row[0] not in seen:
                seen.add(row[0])
                fresh.append(row)
        tx.executemany(
            "INSERT INTO predictions (request_id, client_id, at, model, version, shadow, predicted, top, "
            "probabilities, subject_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", fresh)
        return seen

    def _existing(self, tx: Tx, request_ids: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for part in chunks(sorted(set(request_ids)), _PARAMS):
            marks = ", ".join("?" * len(part))
            out.update(r for (r,) in tx.execute(f"SELECT request_id FROM predictions WHERE request_id IN ({marks})",
                                                part))
        return out

    def _annotate(self, tx: Tx, annotations: list[Annotation]) -> set[str]:
        found = set()
        for request_id, client_id, subject_hash in annotations:
            tx.execute("UPDATE predictions SET client_id = coalesce(client_id, ?), "
                       "subject_hash = coalesce(?, subject_hash) WHERE request_id = ?",
                       (client_id, subject_hash, request_id))
            if tx.rowcount:
                found.add(request_id)
        return found

    def _apply(self, tx: Tx, deltas: Deltas) -> None:
        tx.executemany(
            "INSERT INTO quality_bins VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, version, bucket, bin) "
            "DO UPDATE SET rows = rows + excluded.rows, confidence = confidence + excluded.confidence, "
            "labelled = labelled + excluded.labelled, "
            "labelled_confidence = labelled_confidence + excluded.labelled_confidence, "
            "correct = correct + excluded.correct", deltas.bin_rows())
        tx.executemany(
            "INSERT INTO confusion VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
            "(model, version, bucket, true_class, predicted_class) DO UPDATE SET n = n + excluded.n",
            deltas.confusion_rows())
        tx.executemany(
            "INSERT INTO label_delays VALUES (?, ?, ?, ?, ?) ON CONFLICT (model, version, bucket, bin) "
            "DO UPDATE SET n = n + excluded.n", deltas.delay_rows())

    def _lock_rows(self, tx: Tx, request_ids: Sequence[str], client_ids: Sequence[str] = ()) -> list[Row]:
        # BEGIN IMMEDIATE already holds the database's write lock: nothing to lock row by row
        out: dict[str, Row] = {}
        for column, values in (("request_id", request_ids), ("client_id", client_ids)):
            for part in chunks(sorted(set(values)), _PARAMS):
                marks = ", ".join("?" * len(part))
                for row in tx.execute(f"SELECT {_ROW} FROM predictions WHERE {column} IN ({marks})", part):
                    out.setdefault(row[0], _row(row))
        return [out[r] for r in sorted(out)]

    def _rows_by_subject(self, tx: Tx, subject_hash: str) -> list[Row]:
        return [_row(v) for v in tx.execute(f"SELECT {_ROW} FROM predictions WHERE subject_hash = ? "
                                            "ORDER BY request_id", (subject_hash,))]

    def _labels(self, tx: Tx, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, ...]]:
        out = {}
        for model, version in keys:
            row = tx.execute("SELECT labels FROM model_versions WHERE model = ? AND version = ?",
                             (model, version)).fetchone()
            if row is not None:
                out[(model, version)] = tuple(json.loads(row[0]))
        return out

    def _register(self, tx: Tx, model: str, version: str, labels: Sequence[str]) -> None:
        tx.execute("INSERT INTO model_versions VALUES (?, ?, ?) ON CONFLICT (model, version) "
                   "DO UPDATE SET labels = excluded.labels", (model, version, json.dumps(list(labels))))

    def _set_truth(self, tx: Tx, updates: list[tuple[str, float, str | None, str]]) -> None:
        tx.executemany("UPDATE predictions SET truth = ?, labelled_at = ?, "
                       "subject_hash = coalesce(?, subject_hash) WHERE request_id = ?", updates)

    def _delete(self, tx: Tx, request_ids: Sequence[str]) -> None:
        tx.executemany("DELETE FROM predictions WHERE request_id = ?", [(r,) for r in request_ids])

    def _purge_rows(self, tx: Tx, before: float, limit: int) -> int:
        return int(tx.execute("DELETE FROM predictions WHERE rowid IN (SELECT rowid FROM predictions WHERE at < ? "
                              "LIMIT ?)", (before, limit)).rowcount)

    def _purge_aggregates(self, tx: Tx, before_bucket: int) -> None:
        for table in ("quality_bins", "confusion", "label_delays"):
            tx.execute(f"DELETE FROM {table} WHERE bucket < ?", (before_bucket,))

    def _secret(self, tx: Tx, name: str, make: bytes) -> bytes:
        tx.execute("INSERT INTO secrets VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, make))
        return bytes(tx.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()[0])

    # -- reads ---------------------------------------------------------------------------------------------------

    def _sums(self, tx: Tx, model: str, version: str, since_bucket: int, classes: int,
              until_bucket: int = UNBOUNDED) -> Sums:
        sums = Sums.zero(classes)
        key = (model, version, since_bucket, until_bucket)
        sums.add_bins(tx.execute(
            "SELECT bin, sum(rows), sum(confidence), sum(labelled), sum(labelled_confidence), sum(correct) "
            "FROM quality_bins WHERE model = ? AND version = ? AND bucket >= ? AND bucket <= ? GROUP BY bin", key))
        sums.add_confusion(tx.execute(
            "SELECT true_class, predicted_class, sum(n) FROM confusion WHERE model = ? AND version = ? "
            "AND bucket >= ? AND bucket <= ? GROUP BY true_class, predicted_class", key))
        sums.add_delays(tx.execute(
            "SELECT bin, sum(n) FROM label_delays WHERE model = ? AND version = ? AND bucket >= ? AND bucket <= ? "
            "GROUP BY bin", key))
        return sums

    def _daily_sums(self, tx: Tx, model: str, version: str, since_bucket: int, classes: int) -> dict[int, Sums]:
        days: dict[int, Sums] = {}
        key = (BUCKETS_PER_DAY, model, version, since_bucket)

        def day(number: int) -> Sums:
            if number not in days:
                days[number] = Sums.zero(classes)
            return days[number]

        for d, *values in tx.execute(
                "SELECT bucket / ? AS day, bin, sum(rows), sum(confidence), sum(labelled), "
                "sum(labelled_confidence), sum(correct) FROM quality_bins WHERE model = ? AND version = ? "
                "AND bucket >= ? GROUP BY day, bin", key):
            day(d).add_bins([values])
        for d, *values in tx.execute(
                "SELECT bucket / ? AS day, true_class, predicted_class, sum(n) FROM confusion WHERE model = ? "
                "AND version = ? AND bucket >= ? GROUP BY day, true_class, predicted_class", key):
            day(d).add_confusion([values])
        for d, *values in tx.execute(
                "SELECT bucket / ? AS day, bin, sum(n) FROM label_delays WHERE model = ? AND version = ? "
                "AND bucket >= ? GROUP BY day, bin", key):
            day(d).add_delays([values])
        return days

    def _recent(self, tx: Tx, model: str, version: str, limit: int) -> list[tuple[str, str]]:
        return list(tx.execute(
            "SELECT predicted, truth FROM predictions WHERE model = ? AND version = ? AND truth IS NOT NULL "
            "ORDER BY at DESC LIMIT ?", (model, version, limit)))

    # -- what a fleet shares -------------------------------------------------------------------------------------

    def _put_member(self, tx: Tx, member: str, started: float, seen: float, summary: str) -> None:
        tx.execute("INSERT INTO fleet_members VALUES (?, ?, ?, ?) ON CONFLICT (member) DO UPDATE SET "
                   "seen = excluded.seen, summary = excluded.summary", (member, started, seen, summary))

    def _members(self, tx: Tx, seen_since: float) -> list[tuple[str, float, float, str]]:
        return list(tx.execute("SELECT member, started, seen, summary FROM fleet_members WHERE seen >= ? "
                               "ORDER BY member", (seen_since,)).fetchall())

    def _delete_members(self, tx: Tx, member: str | None, seen_before: float) -> None:
        tx.execute("DELETE FROM fleet_members WHERE member = ? OR seen < ?", (member, seen_before))

    def _lock_lease(self, tx: Tx, name: str) -> tuple[str, float]:
        row = tx.execute("SELECT holder, expires FROM fleet_leases WHERE name = ?", (name,)).fetchone()
        return (str(row[0]), float(row[1])) if row else ("", 0.0)

    def _put_lease(self, tx: Tx, name: str, holder: str, expires: float) -> None:
        tx.execute("INSERT INTO fleet_leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                   "holder = excluded.holder, expires = excluded.expires", (name, holder, expires))

    def _put_shared(self, tx: Tx, key: str, value: str, updated: float) -> None:
        tx.execute("INSERT INTO shared_values VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                   "value = excluded.value, updated = excluded.updated WHERE shared_values.updated <= excluded.updated",
                   (key, value, updated))

    def _shared_values(self, tx: Tx, prefix: str) -> list[tuple[str, str, float]]:
        return list(tx.execute("SELECT key, value, updated FROM shared_values WHERE substr(key, 1, ?) = ? "
                               "ORDER BY key", (len(prefix), prefix)).fetchall())

    def _add_minutes(self, tx: Tx, rows: Sequence[tuple[str, int, str]]) -> None:
        tx.executemany("INSERT INTO history_minutes VALUES (?, ?, ?) ON CONFLICT (minute, member) DO UPDATE SET "
                       "data = excluded.data", rows)

    def _minutes(self, tx: Tx, since: int, until: int) -> list[tuple[str, int, str]]:
        return list(tx.execute("SELECT member, minute, data FROM history_minutes WHERE minute >= ? AND minute < ? "
                               "ORDER BY minute, member", (since, until)).fetchall())

    def _first_minute(self, tx: Tx) -> int | None:
        row = tx.execute("SELECT min(minute) FROM history_minutes").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _purge_minutes(self, tx: Tx, before: int) -> None:
        tx.execute("DELETE FROM history_minutes WHERE minute < ?", (before,))
