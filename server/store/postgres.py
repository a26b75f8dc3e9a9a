"""The PostgreSQL backend: one database shared by a fleet. psycopg 3 with a connection pool; rows are written
with batched inserts in one transaction; feedback locks the rows it joins (`SELECT ... FOR UPDATE`), and
migrations hold a transaction-level advisory lock, so replicas starting at once take turns."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from vigil.server.store.aggregates import BUCKETS_PER_DAY, UNBOUNDED, Deltas, Sums
from vigil.server.store.base import Annotation, Row, Store, Tx
from vigil.server.store.records import StoreConflict, StoreError
from vigil.server.store.urls import redact

logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
"""The pool warns on every failed connection attempt; the store's own messages say it once, with the cause."""

MIGRATION_LOCK = 0x76_69_67_69_6C  # "vigil"
"""The advisory lock key migrations hold."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the prediction log, the versions' labels, the quality aggregates, stored secrets
        """CREATE TABLE predictions (
            request_id TEXT PRIMARY KEY, client_id TEXT, at DOUBLE PRECISION NOT NULL, model TEXT NOT NULL,
            version TEXT NOT NULL, shadow BOOLEAN NOT NULL, predicted TEXT NOT NULL, top BYTEA NOT NULL,
            probabilities BYTEA, subject_hash TEXT, truth TEXT, labelled_at DOUBLE PRECISION)""",
        "CREATE INDEX predictions_client_id ON predictions (client_id) WHERE client_id IS NOT NULL",
        "CREATE INDEX predictions_labelled ON predictions (model, version, at) WHERE truth IS NOT NULL",
        """CREATE TABLE model_versions (model TEXT NOT NULL, version TEXT NOT NULL, labels TEXT NOT NULL,
            PRIMARY KEY (model, version))""",
        """CREATE TABLE quality_bins (model TEXT NOT NULL, version TEXT NOT NULL, bucket BIGINT NOT NULL,
            bin INTEGER NOT NULL, rows BIGINT NOT NULL, confidence DOUBLE PRECISION NOT NULL,
            labelled BIGINT NOT NULL, labelled_confidence DOUBLE PRECISION NOT NULL, correct BIGINT NOT NULL,
            PRIMARY KEY (model, version, bucket, bin))""",
        """CREATE TABLE confusion (model TEXT NOT NULL, version TEXT NOT NULL, bucket BIGINT NOT NULL,
            true_class INTEGER NOT NULL, predicted_class INTEGER NOT NULL, n BIGINT NOT NULL,
            PRIMARY KEY (model, version, bucket, true_class, predicted_class))""",
        """CREATE TABLE label_delays (model TEXT NOT NULL, version TEXT NOT NULL, bucket BIGINT NOT NULL,
            bin INTEGER NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (model, version, bucket, bin))""",
        "CREATE TABLE secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
    ),
    (  # 2: indexes for erasure by subject and for the retention purge
        "CREATE INDEX predictions_subject ON predictions (subject_hash) WHERE subject_hash IS NOT NULL",
        "CREATE INDEX predictions_at ON predictions (at)",
    ),
    (  # 3: what the members of a fleet share: their summaries, the leader's lease, shared values, report minutes
        """CREATE TABLE fleet_members (member TEXT PRIMARY KEY, started DOUBLE PRECISION NOT NULL,
            seen DOUBLE PRECISION NOT NULL, summary TEXT NOT NULL)""",
        """CREATE TABLE fleet_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL,
            expires DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE shared_values (key TEXT PRIMARY KEY, value TEXT NOT NULL,
            updated DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE history_minutes (member TEXT NOT NULL, minute BIGINT NOT NULL, data TEXT NOT NULL,
            PRIMARY KEY (minute, member))""",
    ),
)

_ROW = "request_id, at, model, version, predicted, top, truth, labelled_at, client_id"


def _row(values: Sequence[Any]) -> Row:
    values = list(values)
    values[5] = bytes(values[5])
    return Row(*values)


class PostgresStore(Store):
    """The prediction log in a PostgreSQL database."""

    migrations = MIGRATIONS

    def __init__(self, url: str, *, pool_size: int, connect_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name = redact(url)
        self._url = url
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=False, timeout=connect_timeout,
                                    kwargs={"connect_timeout": max(int(connect_timeout), 1)},
                                    name="vigil-store")
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except (PoolTimeout, psycopg.Error) as exc:
            self._pool.close()
            raise StoreError(self._explain(exc)) from None

    def _explain(self, exc: Exception) -> str:
        if isinstance(exc, PoolTimeout):
            detail = self._last_connect_error()
            return f"cannot connect to the PostgreSQL store {self.name}: {detail}"
        return f"the PostgreSQL store {self.name} cannot be used: {str(exc).strip()}"

    def _last_connect_error(self) -> str:
        """Why a connection cannot be made, from one direct attempt (the pool only says it timed out)."""
        try:
            with psycopg.connect(self._url, connect_timeout=2):
                return "the pool timed out, though a direct connection works"
        except psycopg.Error as exc:
            return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[Tx]:
        try:
            with self._pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
                if not write:  # every query of a read sees one snapshot
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield cursor
        except psycopg.errors.TransactionRollback as exc:  # a deadlock or a serialisation failure
            raise StoreConflict(self._explain(exc)) from None
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(self._explain(exc)) from None

    def close(self) -> None:
        self._pool.close()

    # -- schema --------------------------------------------------------------------------------------------------

    def _lock_schema(self, tx: Tx) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def _schema_version(self, tx: Tx) -> int:
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        tx.execute("SELECT max(version) FROM schema_version")
        row = tx.fetchone()
        return int(row[0] or 0)

    def _set_schema_version(self, tx: Tx, version: int) -> None:
        tx.execute("DELETE FROM schema_version")
        tx.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    def _run(self, tx: Tx, statement: str) -> None:
        tx.execute(statement)

    # -- writes --------------------------------------------------------------------------------------------------

    def _insert(self, tx: Tx, rows: list[tuple[Any, ...]]) -> set[str]:
        columns = list(zip(*rows, strict=True))
        tx.execute(
            "INSERT INTO predictions (request_id, client_id, at, model, version, shadow, predicted, top, "
            "probabilities, subject_hash) SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[], "
            "%s::text[], %s::bool[], %s::text[], %s::bytea[], %s::bytea[], %s::text[]) "
            "ON CONFLICT (request_id) DO NOTHING RETURNING request_id", [list(c) for c in columns])
        return {row[0] for row in tx.fetchall()}

    def _annotate(self, tx: Tx, annotations: list[Annotation]) -> set[str]:
        tx.execute(
            "UPDATE predictions p SET client_id = coalesce(p.client_id, v.client_id), "
            "subject_hash = coalesce(v.subject_hash, p.subject_hash) "
            "FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(request_id, client_id, subject_hash) "
            "WHERE p.request_id = v.request_id RETURNING p.request_id",
            ([r for r, _, _ in annotations], [c for _, c, _ in annotations], [h for _, _, h in annotations]))
        return {row[0] for row in tx.fetchall()}

    def _apply(self, tx: Tx, deltas: Deltas) -> None:
        # Sorted, so concurrent transactions lock the counters in one order and cannot deadlock.
        if bins := sorted(deltas.bin_rows()):
            tx.executemany(
                "INSERT INTO quality_bins VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (model, version, bucket, bin) DO UPDATE SET rows = quality_bins.rows + EXCLUDED.rows, "
                "confidence = quality_bins.confidence + EXCLUDED.confidence, "
                "labelled = quality_bins.labelled + EXCLUDED.labelled, "
                "labelled_confidence = quality_bins.labelled_confidence + EXCLUDED.labelled_confidence, "
                "correct = quality_bins.correct + EXCLUDED.correct", bins)
        if confusion := sorted(deltas.confusion_rows()):
            tx.executemany(
                "INSERT INTO confusion VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT "
                "(model, version, bucket, true_class, predicted_class) DO UPDATE SET n = confusion.n + EXCLUDED.n",
                confusion)
        if delays := sorted(deltas.delay_rows()):
            tx.executemany(
                "INSERT INTO label_delays VALUES (%s, %s, %s, %s, %s) ON CONFLICT (model, version, bucket, bin) "
                "DO UPDATE SET n = label_delays.n + EXCLUDED.n", delays)

    def _select(self, tx: Tx, sql: str, params: Sequence[Any]) -> list[Row]:
        tx.execute(sql, params)
        return [_row(values) for values in tx.fetchall()]

    def _lock_rows(self, tx: Tx, request_ids: Sequence[str], client_ids: Sequence[str] = ()) -> list[Row]:
        if not request_ids and not client_ids:
            return []
        return self._select(tx, f"SELECT {_ROW} FROM predictions WHERE request_id = ANY(%s) OR client_id = ANY(%s) "
                                "ORDER BY request_id FOR UPDATE", (sorted(set(request_ids)), sorted(set(client_ids))))

    def _rows_by_subject(self, tx: Tx, subject_hash: str) -> list[Row]:
        return self._select(tx, f"SELECT {_ROW} FROM predictions WHERE subject_hash = %s ORDER BY request_id "
                                "FOR UPDATE", (subject_hash,))

    def _labels(self, tx: Tx, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, ...]]:
        out = {}
        for model, version in keys:
            tx.execute("SELECT labels FROM model_versions WHERE model = %s AND version = %s", (model, version))
            row = tx.fetchone()
            if row is not None:
                out[(model, version)] = tuple(json.loads(row[0]))
        return out

    def _register(self, tx: Tx, model: str, version: str, labels: Sequence[str]) -> None:
        tx.execute("INSERT INTO model_versions VALUES (%s, %s, %s) ON CONFLICT (model, version) "
                   "DO UPDATE SET labels = EXCLUDED.labels", (model, version, json.dumps(list(labels))))

    def _set_truth(self, tx: Tx, updates: list[tuple[str, float, str | None, str]]) -> None:
        tx.executemany("UPDATE predictions SET truth = %s, labelled_at = %s, "
                       "subject_hash = coalesce(%s, subject_hash) WHERE request_id = %s", updates)

    def _delete(self, tx: Tx, request_ids: Sequence[str]) -> None:
        tx.execute("DELETE FROM predictions WHERE request_id = ANY(%s)", (list(request_ids),))

    def _purge_rows(self, tx: Tx, before: float, limit: int) -> int:
        tx.execute("DELETE FROM predictions WHERE request_id IN (SELECT request_id FROM predictions WHERE at < %s "
                   "LIMIT %s)", (before, limit))
        return int(tx.rowcount)

    def _purge_aggregates(self, tx: Tx, before_bucket: int) -> None:
        for table in ("quality_bins", "confusion", "label_delays"):
            tx.execute(f"DELETE FROM {table} WHERE bucket < %s", (before_bucket,))

    def _secret(self, tx: Tx, name: str, make: bytes) -> bytes:
        tx.execute("INSERT INTO secrets VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (name, make))
        tx.execute("SELECT value FROM secrets WHERE name = %s", (name,))
        return bytes(tx.fetchone()[0])

    # -- reads ---------------------------------------------------------------------------------------------------

    def _fetch(self, tx: Tx, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        tx.execute(sql, params)
        return list(tx.fetchall())

    def _sums(self, tx: Tx, model: str, version: str, since_bucket: int, classes: int,
              until_bucket: int = UNBOUNDED) -> Sums:
        sums = Sums.zero(classes)
        key = (model, version, since_bucket, until_bucket)
        sums.add_bins(self._fetch(
            tx, "SELECT bin, sum(rows), sum(confidence), sum(labelled), sum(labelled_confidence), sum(correct) "
            "FROM quality_bins WHERE model = %s AND version = %s AND bucket >= %s AND bucket <= %s GROUP BY bin", key))
        sums.add_confusion(self._fetch(
            tx, "SELECT true_class, predicted_class, sum(n) FROM confusion WHERE model = %s AND version = %s "
            "AND bucket >= %s AND bucket <= %s GROUP BY true_class, predicted_class", key))
        sums.add_delays(self._fetch(
            tx, "SELECT bin, sum(n) FROM label_delays WHERE model = %s AND version = %s AND bucket >= %s "
            "AND bucket <= %s GROUP BY bin", key))
        return sums

    def _daily_sums(self, tx: Tx, model: str, version: str, since_bucket: int, classes: int) -> dict[int, Sums]:
        days: dict[int, Sums] = {}
        key = (BUCKETS_PER_DAY, model, version, since_bucket)

        def add(rows: list[tuple[Any, ...]], adder: Callable[[Sums, list[Any]], None]) -> None:
            for d, *values in rows:
                if d not in days:
                    days[d] = Sums.zero(classes)
                adder(days[d], [values])

        add(self._fetch(tx, "SELECT bucket / %s AS day, bin, sum(rows), sum(confidence), sum(labelled), "
                        "sum(labelled_confidence), sum(correct) FROM quality_bins WHERE model = %s "
                        "AND version = %s AND bucket >= %s GROUP BY day, bin", key), Sums.add_bins)
        add(self._fetch(tx, "SELECT bucket / %s AS day, true_class, predicted_class, sum(n) FROM confusion "
                        "WHERE model = %s AND version = %s AND bucket >= %s "
                        "GROUP BY day, true_class, predicted_class", key), Sums.add_confusion)
        add(self._fetch(tx, "SELECT bucket / %s AS day, bin, sum(n) FROM label_delays WHERE model = %s "
                        "AND version = %s AND bucket >= %s GROUP BY day, bin", key), Sums.add_delays)
        return days

    def _recent(self, tx: Tx, model: str, version: str, limit: int) -> list[tuple[str, str]]:
        return [(p, t) for p, t in self._fetch(
            tx, "SELECT predicted, truth FROM predictions WHERE model = %s AND version = %s AND truth IS NOT NULL "
            "ORDER BY at DESC LIMIT %s", (model, version, limit))]

    # -- what a fleet shares -------------------------------------------------------------------------------------

    def _now(self, tx: Tx) -> float:
        """The database server's clock, which every member of a fleet reads alike, whatever its host's clock says
        (a clock set in place of `time.time`, as tests do, is used as it is)."""
        if self.clock is not time.time:
            return self.clock()
        tx.execute("SELECT extract(epoch FROM clock_timestamp())")
        return float(tx.fetchone()[0])

    def _put_member(self, tx: Tx, member: str, started: float, seen: float, summary: str) -> None:
        tx.execute("INSERT INTO fleet_members VALUES (%s, %s, %s, %s) ON CONFLICT (member) DO UPDATE SET "
                   "seen = EXCLUDED.seen, summary = EXCLUDED.summary", (member, started, seen, summary))

    def _members(self, tx: Tx, seen_since: float) -> list[tuple[str, float, float, str]]:
        return self._fetch(tx, "SELECT member, started, seen, summary FROM fleet_members WHERE seen >= %s "
                               "ORDER BY member", (seen_since,))

    def _delete_members(self, tx: Tx, member: str | None, seen_before: float) -> None:
        tx.execute("DELETE FROM fleet_members WHERE member = %s OR seen < %s", (member, seen_before))

    def _lock_lease(self, tx: Tx, name: str) -> tuple[str, float]:
        # the row exists first, so that FOR UPDATE has a row to lock even on the very first take
        tx.execute("INSERT INTO fleet_leases VALUES (%s, '', 0) ON CONFLICT (name) DO NOTHING", (name,))
        tx.execute("SELECT holder, expires FROM fleet_leases WHERE name = %s FOR UPDATE", (name,))
        row = tx.fetchone()
        return (str(row[0]), float(row[1])) if row else ("", 0.0)

    def _put_lease(self, tx: Tx, name: str, holder: str, expires: float) -> None:
        tx.execute("INSERT INTO fleet_leases VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                   "holder = EXCLUDED.holder, expires = EXCLUDED.expires", (name, holder, expires))

    def _put_shared(self, tx: Tx, key: str, value: str, updated: float) -> None:
        tx.execute("INSERT INTO shared_values VALUES (%s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                   "value = EXCLUDED.value, updated = EXCLUDED.updated WHERE shared_values.updated <= EXCLUDED.updated",
                   (key, value, updated))

    def _shared_values(self, tx: Tx, prefix: str) -> list[tuple[str, str, float]]:
        return self._fetch(tx, "SELECT key, value, updated FROM shared_values WHERE left(key, %s) = %s ORDER BY key",
                           (len(prefix), prefix))

    def _add_minutes(self, tx: Tx, rows: Sequence[tuple[str, int, str]]) -> None:
        tx.executemany("INSERT INTO history_minutes VALUES (%s, %s, %s) ON CONFLICT (minute, member) DO UPDATE SET "
                       "data = EXCLUDED.data", rows)

    def _minutes(self, tx: Tx, since: int, until: int) -> list[tuple[str, int, str]]:
        return self._fetch(tx, "SELECT member, minute, data FROM history_minutes WHERE minute >= %s AND minute < %s "
                               "ORDER BY minute, member", (since, until))

    def _first_minute(self, tx: Tx) -> int | None:
        tx.execute("SELECT min(minute) FROM history_minutes")
        row = tx.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _purge_minutes(self, tx: Tx, before: int) -> None:
        tx.execute("DELETE FROM history_minutes WHERE minute < %s", (before,))
