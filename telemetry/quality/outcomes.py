"""Ground truth: recent predictions kept for feedback to join, and accuracy over windows of labelled rows.

A prediction is stored under the request id the caller received. Feedback for that id gives each row its true
class; the labelled rows go into a window per model version, from which accuracy, per-class precision, recall and
F1 and a confusion matrix are computed over the most recent rows (a count window) and over recent time (a time
window). Feedback sent twice for one id replaces the first: the rows are counted once, with the later labels.
Subject ids are kept only as a keyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Classes = npt.NDArray[np.intp]
"""Class indexes, one per row."""


class UnknownPrediction(LookupError):
    """No stored prediction has this request id (never made, evicted, or past its time to live)."""


class InvalidFeedback(ValueError):
    """Feedback that does not fit its prediction: wrong number of labels, or a label the model does not have."""


class AmbiguousId(InvalidFeedback):
    """Feedback by a caller-chosen id that several recent predictions were sent with."""


def subject_hash(key: bytes, subject: str) -> str:
    """The keyed hash (HMAC-SHA256, hex) under which a subject id is kept and logged."""
    return hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class StoredPrediction:
    """What a request predicted, per row."""

    model: str
    version: str
    labels: tuple[str, ...]
    """The model's class labels, in probability-column order."""
    predicted: Classes
    stored_at: float


_Entry = tuple[str, str, tuple[str, ...], Classes, float]
"""A StoredPrediction's fields as a plain tuple: the garbage collector stops tracking such tuples, so a store of
100,000 predictions does not lengthen every full collection."""


class PredictionStore:
    """Recent predictions by request id, bounded in count and age; the oldest go first.

    >>> store = PredictionStore(size=2, ttl_seconds=60)
    >>> store.put("r1", StoredPrediction("m", "1", ("a", "b"), np.array([1]), stored_at=0.0))
    >>> store.get("r1", now=30.0).predicted
    array([1])
    """

    def __init__(self, *, size: int, ttl_seconds: float) -> None:
        if size < 1 or ttl_seconds <= 0:
            raise ValueError("PredictionStore needs size >= 1 and ttl_seconds > 0")
        self._size = size
        self._ttl = ttl_seconds
        self._items: OrderedDict[str, _Entry] = OrderedDict()
        self._aliases: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        """Caller-chosen id → (the server's request id, or None once several predictions used it; when)."""
        self._lock = threading.Lock()
        self.evicted = 0
        """Predictions dropped to stay within `size` before they expired."""

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: Sequence[tuple[str, _Entry]], now: float) -> None:
        """Store predictions given as (request id, (model, version, labels, predicted, stored_at)); an id seen
        again is replaced and becomes the newest."""
        with self._lock:
            entries = self._items
            for request_id, entry in items:
                if request_id in entries:
                    del entries[request_id]
                entries[request_id] = entry
            self._expire(now)
            overflow = len(entries) - self._size
            for _ in range(max(overflow, 0)):
                entries.popitem(last=False)
            self.evicted += max(overflow, 0)

    def put(self, request_id: str, prediction: StoredPrediction) -> None:
        p = prediction
        self.put_many([(request_id, (p.model, p.version, p.labels, p.predicted, p.stored_at))], p.stored_at)

    def alias(self, client_id: str, request_id: str, now: float) -> None:
        """Let feedback find the prediction of `request_id` by the id its caller chose. A caller-chosen id never
        replaces a prediction: an id that is a server's request id is ignored, and one sent with several recent
        predictions names none of them (feedback by it is refused as ambiguous until they expire)."""
        with self._lock:
            self._expire(now)
            if client_id == request_id or client_id in self._items:
                return
            held = self._aliases.pop(client_id, None)
            self._aliases[client_id] = (request_id if held is None else None, now)
            while len(self._aliases) > self._size:
                self._aliases.popitem(last=False)

    def find(self, request_id: str, now: float) -> tuple[str, StoredPrediction]:
        """The server's request id and the prediction that `request_id` names (the server's id, or the id a caller
        chose); UnknownPrediction when there is none or it expired, AmbiguousId for a caller's id several
        predictions were sent with."""
        with self._lock:
            self._expire(now)
            found = self._items.get(request_id)
            if found is None and (alias := self._aliases.get(request_id)) is not None:
                if alias[0] is None:
                    raise AmbiguousId(f"several recent predictions were sent with the id {request_id!r}; give the "
                                      "request id the server answered with (the response parameter request_id)")
                request_id, found = alias[0], self._items.get(alias[0])
        if found is None:
            raise UnknownPrediction(
                f"no recent prediction has request id {request_id!r} (unknown, or older than the "
                f"{self._ttl:g} s predictions are kept for feedback)")
        return request_id, StoredPrediction(*found)

    def get(self, request_id: str, now: float) -> StoredPrediction:
        """The prediction `request_id` names (see `find`)."""
        return self.find(request_id, now)[1]

    def _expire(self, now: float) -> None:
        entries = self._items
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest[4] <= self._ttl:
                break
            entries.popitem(last=False)
        aliases = self._aliases
        while aliases and now - next(iter(aliases.values()))[1] > self._ttl:
            aliases.popitem(last=False)


@dataclass(frozen=True)
class Labelled:
    """The rows of one request with their true and predicted classes."""

    true: Classes
    predicted: Classes
    received_at: float
    subject: str | None = None
    """Keyed hash of the subject id, when one was sent."""


@dataclass(frozen=True)
class WindowMetrics:
    """Accuracy and per-class metrics of a window of labelled rows; `confusion[t, p]` counts rows of true class t
    predicted as p."""

    confusion: npt.NDArray[np.int64]

    @property
    def rows(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float | None:
        rows = self.rows
        return float(np.trace(self.confusion)) / rows if rows else None

    def per_class(self) -> list[tuple[float, float, float, int]]:
        """(precision, recall, F1, support) per class; 0 where a ratio is undefined."""
        right = np.diag(self.confusion).astype(np.float64)
        predicted = self.confusion.sum(axis=0)
        support = self.confusion.sum(axis=1)
        precision = np.divide(right, predicted, out=np.zeros_like(right), where=predicted > 0)
        recall = np.divide(right, support, out=np.zeros_like(right), where=support > 0)
        both = precision + recall
        f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(right), where=both > 0)
        return [(float(p), float(r), float(f), int(s)) for p, r, f, s in zip(precision, recall, f1, support,
                                                                           strict=True)]


class LabelledWindow:
    """One model version's labelled rows, keyed by request id, newest last, bounded by `max_rows` rows.

    The time window's confusion matrix is kept up to date as rows arrive and leave; the count window's is
    recomputed from the newest entries when asked for after a change, and reused until the next one (the stream,
    the gauges and the alert rules all ask, many times a second).
    """

    def __init__(self, classes: int, *, count_rows: int, seconds: float, max_rows: int) -> None:
        if classes < 1 or count_rows < 1 or seconds <= 0 or max_rows < 1:
            raise ValueError("LabelledWindow needs classes, count_rows and max_rows >= 1 and seconds > 0")
        self.classes = classes
        self.count_rows = count_rows
        self.seconds = seconds
        self._max_rows = max_rows
        self._entries: OrderedDict[str, Labelled] = OrderedDict()
        self._rows = 0
        self._timed = np.zeros((classes, classes), np.int64)
        self._lock = threading.Lock()
        self._changes = 0
        """Entries added or removed so far: the cached metrics hold while it stays the same."""
        self._cached: tuple[int, WindowMetrics, WindowMetrics] | None = None
        self.received = 0
        """Labelled rows received, each request id counted once."""

    def add(self, request_id: str, labelled: Labelled) -> bool:
        """Add or replace the labels of `request_id`; True when an earlier one was replaced."""
        with self._lock:
            earlier = self._entries.pop(request_id, None)
            if earlier is not None:
                self._leave(earlier)
            else:
                self.received += len(labelled.true)
            self._entries[request_id] = labelled
            self._changes += 1
            self._rows += len(labelled.true)
            self._timed += self._confusion(labelled)
            while self._rows > self._max_rows and len(self._entries) > 1:
                self._leave(self._entries.popitem(last=False)[1])
            return earlier is not None

    def metrics(self, now: float) -> tuple[WindowMetrics, WindowMetrics]:
        """(count window, time window) metrics as of `now`."""
        with self._lock:
            self._expire(now)
            if self._cached is not None and self._cached[0] == self._changes:
                return self._cached[1], self._cached[2]
            recent = np.zeros((self.classes, self.classes), np.int64)
            rows = 0
            for labelled in reversed(self._entries.values()):
                if rows >= self.count_rows:
                    break
                take = min(len(labelled.true), self.count_rows - rows)
                recent += self._confusion(labelled, take)
                rows += take
            result = WindowMetrics(recent), WindowMetrics(self._timed.copy())
            self._cached = (self._changes, *result)
            return result

    def _expire(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.received_at <= self.seconds:
                break
            self._leave(self._entries.popitem(last=False)[1])

    def _leave(self, labelled: Labelled) -> None:
        self._changes += 1
        self._rows -= len(labelled.true)
        self._timed -= self._confusion(labelled)

    def _confusion(self, labelled: Labelled, rows: int | None = None) -> npt.NDArray[np.int64]:
        true, predicted = labelled.true, labelled.predicted
        if rows is not None:  # the newest rows of a request come last
            true, predicted = true[len(true) - rows:], predicted[len(predicted) - rows:]
        k = self.classes
        return np.bincount(true * k + predicted, minlength=k * k).reshape(k, k).astype(np.int64)
