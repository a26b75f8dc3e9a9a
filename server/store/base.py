"""The store's interface and the logic every backend shares: logging predictions, joining feedback, computing
figures, erasure, retention and schema migrations. A backend supplies transactions and the SQL behind each
primitive (`sqlite`, `postgres`); nothing here knows SQL.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vigil.server.store.aggregates import (
    BUCKETS_PER_DAY,
    UNBOUNDED,
    Deltas,
    FigureRequest,
    Sums,
    assemble,
    bucket_of,
    recent_metrics,
    window_figures,
    window_starts,
)
from vigil.server.store.records import (
    MAX_STORED_PROBABILITIES,
    Erased,
    FeedbackItem,
    Joined,
    SchemaTooNew,
    StoreConflict,
    decode_classes,
    encode_classes,
)
from vigil.telemetry.quality.figures import QualityFigures, WindowFigures
from vigil.telemetry.quality.outcomes import InvalidFeedback, LoggedPrediction, UnknownPrediction

logger = logging.getLogger(__name__)

CONFLICT_ATTEMPTS = 3
"""Tries of a feedback transaction the database aborted for a conflict (a deadlock) before the error stands."""
PURGE_CHUNK = 10_000
"""Predictions deleted per transaction by the retention purge."""
RECENT_SECONDS = 30.0
"""A server id younger than this may name a prediction still on its way to the store (from another process)."""

Tx = Any
"""A backend's open transaction (a cursor)."""

Annotation = tuple[str, str | None, str | None]
"""(request id, the id its caller chose or None, the keyed hash of its subject or None)."""


@dataclass
class Row:
    """A logged prediction as feedback and erasure read it."""

    request_id: str
    at: float
    model: str
    version: str
    predicted: str
    top: bytes
    truth: str | None
    labelled_at: float | None
    client_id: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.model, self.version

    def top_values(self) -> list[float]:
        values: list[float] = np.frombuffer(self.top, np.float32).astype(np.float64).tolist()
        return values


def server_id_time(request_id: str) -> float | None:
    """When a server-assigned request id was made (its first 12 hex digits count milliseconds), else None."""
    if len(request_id) != 32:
        return None
    try:
        int(request_id, 16)
    except ValueError:
        return None
    return int(request_id[:12], 16) / 1000.0


class Store(ABC):
    """The prediction log of one database, safe to use from several threads."""

    name: str
    """The store as logs may name it: the backend and where it is, never a password."""
    migrations: Sequence[Sequence[str]]
    """The backend's schema changes, in order: migration n (1-based) brings the schema to version n."""

    def __init__(self, *, retention_days: float, clock: Callable[[], float] = time.time) -> None:
        self.retention_seconds = retention_days * 86_400.0
        self.clock = clock

    # -- what a backend provides ---------------------------------------------------------------------------------

    @abstractmethod
    def transaction(self, *, write: bool) -> AbstractContextManager[Tx]:
        """A transaction; a writing one holds the database's write lock (or row locks) until it ends."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _lock_schema(self, tx: Tx) -> None:
        """Serialise migrations among processes starting at once."""

    @abstractmethod
    def _schema_version(self, tx: Tx) -> int: ...

    @abstractmethod
    def _set_schema_version(self, tx: Tx, version: int) -> None: ...

    @abstractmethod
    def _run(self, tx: Tx, statement: str) -> None: ...

    @abstractmethod
    def _insert(self, tx: Tx, rows: list[tuple[Any, ...]]) -> set[str]:
        """Rows of (request_id, client_id, at, model, version, shadow, predicted, top, probabilities,
        subject_hash); an id already logged is left as it is. The request ids inserted."""

    @abstractmethod
    def _annotate(self, tx: Tx, annotations: list[Annotation]) -> set[str]:
        """Give logged rows their caller's id (where they have none) and subject hash (where one is given); the
        request ids found."""

    @abstractmethod
    def _apply(self, tx: Tx, deltas: Deltas) -> None: ...

    @abstractmethod
    def _lock_rows(self, tx: Tx, request_ids: Sequence[str], client_ids: Sequence[str] = ()) -> list[Row]:
        """The rows whose request id is among `request_ids` or whose caller's id is among `client_ids`, locked
        for the transaction in request-id order (so concurrent transactions cannot deadlock on them)."""

    @abstractmethod
    def _rows_by_subject(self, tx: Tx, subject_hash: str) -> list[Row]: ...

    @abstractmethod
    def _labels(self, tx: Tx, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, ...]]: ...

    @abstractmethod
    def _register(self, tx: Tx, model: str, version: str, labels: Sequence[str]) -> None: ...

    @abstractmethod
    def _set_truth(self, tx: Tx, updates: list[tuple[str, float, str | None, str]]) -> None:
        """(truth, labelled_at, subject_hash or None to keep it, request_id)."""

    @abstractmethod
    def _delete(self, tx: Tx, request_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def _purge_rows(self, tx: Tx, before: float, limit: int) -> int:
        """Delete up to `limit` predictions made before `before`; how many."""

    @abstractmethod
    def _purge_aggregates(self, tx: Tx, before_bucket: int) -> None: ...

    @abstractmethod
    def _sums(self, tx: Tx, model: str, version: str, since_bucket: int, classes: int,
              until_bucket: int = UNBOUNDED) -> Sums: ...

    @abstractmethod
    def _daily_sums(self, tx: Tx, model: str, version: str, since_bucket: int, classes: int) -> dict[int, Sums]: ...

    @abstractmethod
    def _recent(self, tx: Tx, model: str, version: str, limit: int) -> list[tuple[str, str]]:
        """(predicted, truth) of the newest labelled predictions, newest first."""

    @abstractmethod
    def _secret(self, tx: Tx, name: str, make: bytes) -> bytes:
        """The stored secret `name`, storing `make` first when there is none."""

    def _now(self, tx: Tx) -> float:
        """The time by which members' summaries and leases are judged: the store's clock (Unix seconds)."""
        return self.clock()

    @abstractmethod
    def _put_member(self, tx: Tx, member: str, started: float, seen: float, summary: str) -> None: ...

    @abstractmethod
    def _members(self, tx: Tx, seen_since: float) -> list[tuple[str, float, float, str]]:
        """(member, started, seen, summary) of the members seen since `seen_since`, by member."""

    @abstractmethod
    def _delete_members(self, tx: Tx, member: str | None, seen_before: float) -> None:
        """Remove `member`, and every member not seen since `seen_before`."""

    @abstractmethod
    def _lock_lease(self, tx: Tx, name: str) -> tuple[str, float]:
        """The lease's (holder, expiry), locked for the transaction ("", 0 when nobody ever held it)."""

    @abstractmethod
    def _put_lease(self, tx: Tx, name: str, holder: str, expires: float) -> None: ...

    @abstractmethod
    def _put_shared(self, tx: Tx, key: str, value: str, updated: float) -> None: ...

    @abstractmethod
    def _shared_values(self, tx: Tx, prefix: str) -> list[tuple[str, str, float]]:
        """(key, value, updated) of the shared values whose key starts with `prefix`."""

    @abstractmethod
    def _add_minutes(self, tx: Tx, rows: Sequence[tuple[str, int, str]]) -> None:
        """(member, minute, data) rows of the report history; a row already there is replaced."""

    @abstractmethod
    def _minutes(self, tx: Tx, since: int, until: int) -> list[tuple[str, int, str]]:
        """(member, minute, data) of minutes from `since` up to (not including) `until`, by minute."""

    @abstractmethod
    def _first_minute(self, tx: Tx) -> int | None:
        """The oldest minute of the report history (None when it has none)."""

    @abstractmethod
    def _purge_minutes(self, tx: Tx, before: int) -> None: ...

    # -- schema --------------------------------------------------------------------------------------------------

    def migrate(self, target: int | None = None) -> tuple[int, int]:
        """Bring the schema to the newest version this Vigil knows (or `target`); (version found, version now).
        SchemaTooNew when the store is newer than that."""
        latest = len(self.migrations) if target is None else target
        with self.transaction(write=True) as tx:
            self._lock_schema(tx)
            found = self._schema_version(tx)
            if found > len(self.migrations):
                raise SchemaTooNew(f"{self.name} has schema version {found}, newer than the {len(self.migrations)} "
                                   "this Vigil knows: upgrade Vigil, or point it at another store")
            for version in range(found + 1, latest + 1):
                for statement in self.migrations[version - 1]:
                    self._run(tx, statement)
            # written even when unchanged: a store that cannot be written (a read-only file, a standby) fails here
            self._set_schema_version(tx, max(found, latest))
        if found < latest:
            logger.info("store %s: schema upgraded from version %d to %d", self.name, found, latest)
        return found, max(found, latest)

    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        with self.transaction(write=True) as tx:
            return self._secret(tx, name, make())

    # -- writes --------------------------------------------------------------------------------------------------

    def register(self, model: str, version: str, labels: Sequence[str]) -> None:
        """Record a classifier version's labels, so any process can check feedback for it."""
        with self.transaction(write=True) as tx:
            self._register(tx, model, version, labels)

    def write(self, predictions: Sequence[LoggedPrediction], annotations: Sequence[Annotation] = ()) -> set[str]:
        """Log predictions and their aggregates in one transaction, then apply (request id, caller's id, subject
        hash) annotations; the request ids of annotations whose prediction is not logged (yet)."""
        rows = []
        for p in predictions:
            probabilities = (p.probabilities.astype(np.float32).tobytes()
                             if p.probabilities is not None and p.probabilities.shape[1] <= MAX_STORED_PROBABILITIES
                             else None)
            rows.append((p.request_id, p.client_id, p.at, p.model, p.version, p.shadow,
                         encode_classes(p.predicted), p.top.astype(np.float32).tobytes(), probabilities,
                         p.subject_hash))
        with self.transaction(write=True) as tx:
            # Rows first, then their annotations, then the aggregates: the order feedback and erasure lock in too.
            inserted = self._insert(tx, rows) if rows else set()
            found = self._annotate(tx, list(annotations)) if annotations else set()
            deltas = Deltas()
            for p in predictions:
                if p.request_id in inserted:  # a batch retried after a commit that did happen counts once
                    deltas.predicted(p)
            if deltas:
                self._apply(tx, deltas)
        return {request_id for request_id, _, _ in annotations} - found

    # -- feedback ------------------------------------------------------------------------------------------------

    def feedback(self, items: Sequence[FeedbackItem]) -> list[Joined | Exception]:
        """Join labels to logged predictions in one transaction; per item what it was joined to, or why not
        (UnknownPrediction, InvalidFeedback). Feedback again for a prediction replaces its labels. A transaction
        the database aborted for a conflict with another (a deadlock) is tried again."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                return self._feedback(items)
            except StoreConflict:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _feedback(self, items: Sequence[FeedbackItem]) -> list[Joined | Exception]:
        now = self.clock()
        with self.transaction(write=True) as tx:
            ids = [item.request_id for item in items]
            suffixes = {item.join_shadow_suffix for item in items if item.join_shadow_suffix}
            # Everything the items may name, their shadow copies included, locked at once in request-id order.
            found = self._lock_rows(tx, [*ids, *(i + suffix for i in ids for suffix in suffixes)], ids)
            rows = {r.request_id: r for r in found}  # one Row per prediction, however it was named
            by_client: dict[str, list[Row]] = {}
            for named in found:
                if named.client_id is not None:
                    by_client.setdefault(named.client_id, []).append(named)
            resolved: list[Row | Exception] = [self._resolve(item.request_id, rows, by_client, now) for item in items]
            chosen = [r for r in resolved if isinstance(r, Row)]
            # the shadow copies of predictions named by a caller's id (rarely any)
            missing = sorted({r.request_id + i.join_shadow_suffix for r, i in zip(resolved, items, strict=True)
                              if isinstance(r, Row) and i.join_shadow_suffix} - set(rows))
            for copy in self._lock_rows(tx, missing) if missing else ():
                rows.setdefault(copy.request_id, copy)
            shadows = {r.request_id + i.join_shadow_suffix: rows[r.request_id + i.join_shadow_suffix]
                       for r, i in zip(resolved, items, strict=True)
                       if isinstance(r, Row) and i.join_shadow_suffix and r.request_id + i.join_shadow_suffix in rows}
            labels = self._labels(tx, sorted({r.key for r in [*chosen, *shadows.values()]}))
            deltas = Deltas()
            updates: dict[str, tuple[str, float, str | None, str]] = {}
            out: list[Joined | Exception] = []
            for item, row in zip(items, resolved, strict=True):
                if isinstance(row, Exception):
                    out.append(row)
                    continue
                try:
                    joined = self._join(row, item, labels.get(row.key), now, deltas, updates)
                except InvalidFeedback as exc:
                    out.append(exc)
                    continue
                shadow = shadows.get(row.request_id + item.join_shadow_suffix) if item.join_shadow_suffix else None
                if shadow is not None:
                    try:
                        joined = replace(joined, shadow=self._join(shadow, item, labels.get(shadow.key), now, deltas,
                                                                   updates))
                    except InvalidFeedback:
                        pass  # a shadow version with other labels is not judged by these
                out.append(joined)
            if updates:
                self._set_truth(tx, list(updates.values()))
                self._apply(tx, deltas)
        return out

    def _resolve(self, request_id: str, rows: dict[str, Row], by_client: dict[str, list[Row]],
                 now: float) -> Row | Exception:
        row = rows.get(request_id)
        if row is not None:
            return row
        matches = by_client.get(request_id, [])
        if len(matches) == 1:
            return matches[0]
        if matches:
            return InvalidFeedback(f"{len(matches)} predictions were sent with the id {request_id!r}; give the "
                                   "request id the server answered with (the response parameter request_id)")
        return UnknownPrediction(self._not_found(request_id, now))

    def retention_text(self) -> str:
        """The retention period in words: "30-day", or "0.5 s" for a short one (tests)."""
        days = self.retention_seconds / 86_400
        return f"{days:g}-day" if days >= 1 else f"{self.retention_seconds:g} s"

    def _not_found(self, request_id: str, now: float) -> str:
        period = self.retention_text()
        made = server_id_time(request_id)
        if made is not None and made < now - self.retention_seconds:
            when = time.strftime("%Y-%m-%d", time.gmtime(made))
            return (f"the prediction {request_id!r} was made on {when}, past the {period} retention period: "
                    "its log row has been purged")
        if made is not None and made > now - RECENT_SECONDS:
            return (f"no prediction with request id {request_id!r} has been logged yet: predictions reach the store "
                    "within about a second of their answer, so retry one made just now")
        if made is not None and made <= now + 86_400:
            return f"no prediction with request id {request_id!r} was ever logged"
        return (f"no logged prediction has the id {request_id!r} (never logged, or an id a caller chose for a "
                f"prediction older than the {period} retention period)")

    def _join(self, row: Row, item: FeedbackItem, labels: tuple[str, ...] | None, now: float, deltas: Deltas,
              updates: dict[str, tuple[str, float, str | None, str]]) -> Joined:
        if labels is None:
            raise InvalidFeedback(f"{row.model} version {row.version} has no recorded labels")
        predicted = decode_classes(row.predicted)
        if len(item.labels) != len(predicted):
            raise InvalidFeedback(f"request {row.request_id} predicted {len(predicted)} row(s); feedback must give "
                                  f"one label per row, got {len(item.labels)}")
        index = {label: i for i, label in enumerate(labels)}
        unknown = sorted({label for label in item.labels if label not in index})
        if unknown:
            raise InvalidFeedback(f"labels {unknown} are not labels of {row.model} version {row.version} (its "
                                  f"labels: {list(labels)})")
        truth = [index[label] for label in item.labels]
        top, classes = row.top_values(), predicted.tolist()
        replaced = row.truth is not None
        if replaced:
            assert row.labelled_at is not None
            deltas.labelled(row.key, row.at, top, classes, decode_classes(row.truth or "").tolist(), row.labelled_at,
                            sign=-1)
        deltas.labelled(row.key, row.at, top, classes, truth, now)
        row.truth, row.labelled_at = encode_classes(np.array(truth, np.intp)), now  # a second item sees this one
        updates[row.request_id] = (row.truth, now, item.subject_hash, row.request_id)
        correct = sum(p == t for p, t in zip(classes, truth, strict=True))
        return Joined(row.request_id, row.model, row.version, tuple(labels[i] for i in classes), replaced, correct)

    # -- erasure and retention -----------------------------------------------------------------------------------

    def forget(self, subject_hash: str, shadow_suffix: str = "") -> Erased:
        """Delete every prediction and outcome logged with this subject hash (and their shadow copies, logged under
        request id + `shadow_suffix`), taking them out of the aggregates."""
        with self.transaction(write=True) as tx:
            rows = self._rows_by_subject(tx, subject_hash)
            if shadow_suffix:
                named = {r.request_id for r in rows}
                copies = self._lock_rows(tx, [r.request_id + shadow_suffix for r in rows])
                rows += [r for r in copies if r.request_id not in named]
            deltas = Deltas()
            for row in rows:
                top = row.top_values()
                predicted = decode_classes(row.predicted)
                deltas.predicted(LoggedPrediction(row.request_id, row.at, row.model, row.version, False, predicted,
                                                  np.array(top, np.float32)), sign=-1)
                if row.truth is not None and row.labelled_at is not None:
                    deltas.labelled(row.key, row.at, top, predicted.tolist(), decode_classes(row.truth).tolist(),
                                    row.labelled_at, sign=-1)
            if rows:
                self._delete(tx, [r.request_id for r in rows])
                self._apply(tx, deltas)
        return Erased(len(rows), sum(r.truth is not None for r in rows))

    def purge(self) -> int:
        """Delete predictions older than the retention period, and their aggregates; how many were deleted. Rows
        go in chunks, each its own transaction, so that writers wait for no more than one chunk."""
        before = self.clock() - self.retention_seconds
        deleted = 0
        while True:
            with self.transaction(write=True) as tx:
                chunk = self._purge_rows(tx, before, PURGE_CHUNK)
            deleted += chunk
            if chunk < PURGE_CHUNK:
                break
        with self.transaction(write=True) as tx:
            self._purge_aggregates(tx, bucket_of(before))
        return deleted

    # -- figures -------------------------------------------------------------------------------------------------

    def figures(self, request: FigureRequest) -> QualityFigures:
        """A version's quality by prediction time (see `aggregates`)."""
        now = self.clock()
        classes = len(request.labels)
        starts = window_starts(request, now)
        with self.transaction(write=False) as tx:
            windows = {name: self._sums(tx, request.model, request.version, start, classes)
                       for name, start in starts.items()}
            first_day = bucket_of(now - self.retention_seconds) // BUCKETS_PER_DAY * BUCKETS_PER_DAY
            days = self._daily_sums(tx, request.model, request.version, first_day, classes)
            recent = self._recent(tx, request.model, request.version, request.count_rows)
        labelled_total = int(sum(s.bins[:, 2].sum() for s in days.values()))
        pairs = ((decode_classes(p).tolist(), decode_classes(t).tolist()) for p, t in recent)
        return assemble(request, now, windows, days, recent_metrics(pairs, classes, request.count_rows),
                        labelled_total)

    def period(self, request: FigureRequest, start: float, end: float) -> WindowFigures:
        """A version's figures for the predictions made from `start` to `end` (whole five-minute buckets)."""
        with self.transaction(write=False) as tx:
            sums = self._sums(tx, request.model, request.version, bucket_of(start), len(request.labels),
                              bucket_of(end))
        return window_figures("period", start, end - start, sums, request.calibration)


class SharedState:
    """What the members of a fleet (every process using one store) share beside the prediction log: their published
    summaries, the leader's lease, shared values (rollout states) and the report history's minutes. Every time is
    the store's clock (Unix seconds)."""

    def __init__(self, store: Store) -> None:
        self.store = store


    def publish(self, member: str, started: float, summary: str) -> None:
        with self.store.transaction(write=True) as tx:
            self.store._put_member(tx, member, started, self.store._now(tx), summary)

    def members(self, max_age: float) -> list[tuple[str, float, float, str]]:
        """(member, started, seen, summary) of every member that published within `max_age` seconds."""
        with self.store.transaction(write=False) as tx:
            return self.store._members(tx, self.store._now(tx) - max_age)

    def leave(self, member: str, *, stale_after: float) -> None:
        """Remove `member`'s summary, and those of members silent for `stale_after` seconds."""
        with self.store.transaction(write=True) as tx:
            self.store._delete_members(tx, member, self.store._now(tx) - stale_after)

    def hold_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Take or renew the lease `name` for `seconds` when it is free, expired or already `holder`'s; whether
        `holder` holds it now."""
        with self.store.transaction(write=True) as tx:
            current, expires = self.store._lock_lease(tx, name)
            now = self.store._now(tx)
            if current and current != holder and expires > now:
                return False
            self.store._put_lease(tx, name, holder, now + seconds)
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.store.transaction(write=True) as tx:
            current, _ = self.store._lock_lease(tx, name)
            if current == holder:
                self.store._put_lease(tx, name, holder, 0.0)

    def put(self, key: str, value: str, at: float | None = None) -> None:
        """Set a shared value, as of `at` (when it changed; default now): a value changed earlier than the one
        stored is dropped, so a member that was cut off cannot undo a newer change when it reconnects."""
        with self.store.transaction(write=True) as tx:
            self.store._put_shared(tx, key, value, self.store._now(tx) if at is None else at)

    def values(self, prefix: str) -> list[tuple[str, str, float]]:
        with self.store.transaction(write=False) as tx:
            return self.store._shared_values(tx, prefix)

    def add_minutes(self, rows: Sequence[tuple[str, int, str]]) -> None:
        if rows:
            with self.store.transaction(write=True) as tx:
                self.store._add_minutes(tx, rows)

    def minutes(self, since: int, until: int) -> list[tuple[str, int, str]]:
        with self.store.transaction(write=False) as tx:
            return self.store._minutes(tx, since, until)

    def first_minute(self) -> int | None:
        with self.store.transaction(write=False) as tx:
            return self.store._first_minute(tx)

    def purge_minutes(self, before: int) -> None:
        with self.store.transaction(write=True) as tx:
            self.store._purge_minutes(tx, before)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
