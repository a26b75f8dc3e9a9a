"""Minute buckets: what one model version did in one minute, computed as the difference of two readings of the
cumulative aggregates, and added together over any period."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from vigil.telemetry.metrics.aggregates import HistogramSeries, Reading
from vigil.telemetry.metrics.instruments import (
    BATCH_SIZE,
    CONFIDENCE,
    FEEDBACK,
    FEEDBACK_CORRECT,
    PREDICTIONS,
    REQUEST_DURATION,
    REQUESTS,
)
from vigil.telemetry.stream.frames import counts

Key = tuple[str, str]
"""(model, version)."""
MINUTE_SECONDS = 60

"""The histograms whose buckets a minute keeps."""


def minute_of(unix: float) -> int:
    """The minute (Unix seconds // 60) an instant falls in."""
    return int(unix // MINUTE_SECONDS)


Sparse = tuple[int, ...]
"""Histogram bucket counts as flat (index, count) pairs in index order, e.g. (3, 40, 4, 2): most of a minute's
buckets are empty, and a flat tuple is the smallest way to keep the rest."""


def sparse(counts: Mapping[int, int]) -> Sparse:
    return tuple(x for i in sorted(counts) if counts[i] for x in (i, counts[i]))


def sparse_items(counts: Sparse) -> Iterable[tuple[int, int]]:
    return zip(counts[::2], counts[1::2], strict=True)


def dense(counts: Sparse, size: int) -> list[int]:
    """The counts of buckets 0 .. size-1."""
    out = [0] * size
    for i, n in sparse_items(counts):
        out[i] += n
    return out


@dataclass(frozen=True, slots=True)
class VersionMinute:
    """What one model version did in one minute (or, merged, in several)."""

    calls: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Calls by (method, status code)."""
    duration: Sparse = ()
    """Request durations per bucket of `vigil.request.duration`."""
    duration_sum: float = 0.0
    rows: int = 0
    """Rows run by ONNX Runtime."""
    predictions: Mapping[str, int] = field(default_factory=dict)
    """Classifier rows by predicted class."""
    confidence: Sparse = ()
    """Top-class probabilities per bucket of `vigil.prediction.confidence`."""
    confidence_sum: float = 0.0
    feedback: int = 0
    """Labelled rows received."""
    correct: int = 0
    """Of those, rows predicted right."""
    drift_status: int = -1
    """Worst drift status seen (0 no drift, 1 possible, 2 drift); -1 when no check had a result."""
    drift_psi: float = 0.0
    """Highest PSI seen (with a drift status)."""

    @property
    def is_active(self) -> bool:
        return bool(self.calls or self.rows or self.predictions or self.feedback)

    def merged(self, other: VersionMinute) -> VersionMinute:
        """Both minutes' counts added; drift the worse of the two."""
        return merge_all((self, other))

    def with_drift(self, status: int, psi: float) -> VersionMinute:
        return replace(self, drift_status=max(self.drift_status, status), drift_psi=max(self.drift_psi, psi))


def merge_all(minutes: Iterable[VersionMinute]) -> VersionMinute:
    """The minutes' counts added; drift the worst of them."""
    b = _Builder()
    status, psi = -1, 0.0
    for m in minutes:
        for key, n in m.calls.items():
            b.calls[key] = b.calls.get(key, 0) + n
        for i, n in sparse_items(m.duration):
            b.duration[i] = b.duration.get(i, 0) + n
        for label, n in m.predictions.items():
            b.predictions[label] = b.predictions.get(label, 0) + n
        for i, n in sparse_items(m.confidence):
            b.confidence[i] = b.confidence.get(i, 0) + n
        b.duration_sum += m.duration_sum
        b.confidence_sum += m.confidence_sum
        b.rows += m.rows
        b.feedback += m.feedback
        b.correct += m.correct
        status, psi = max(status, m.drift_status), max(psi, m.drift_psi)
    return b.build(status, psi)


class _Builder:
    """The fields of one version's `VersionMinute` while a difference is computed."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], int] = {}
        self.duration: dict[int, int] = {}
        self.duration_sum = 0.0
        self.rows = 0
        self.predictions: dict[str, int] = {}
        self.confidence: dict[int, int] = {}
        self.confidence_sum = 0.0
        self.feedback = 0
        self.correct = 0

    def build(self, drift_status: int = -1, drift_psi: float = 0.0) -> VersionMinute:
        return VersionMinute(self.calls, sparse(self.duration), self.duration_sum, self.rows, self.predictions,
                             sparse(self.confidence), self.confidence_sum, self.feedback, self.correct, drift_status,
                             drift_psi)


def _counter(now: Reading, then: Reading, name: str) -> Iterable[tuple[tuple[str, ...], int]]:
    earlier = counts(then, name)
    for labels, total in counts(now, name).items():
        delta = total - earlier.get(labels, 0)
        if delta > 0:
            yield labels, delta


def _histogram(now: Reading, then: Reading, name: str
               ) -> Iterable[tuple[tuple[str, ...], dict[int, int], float]]:
    earlier = then.get(name, {})
    for labels, series in now.get(name, {}).items():
        assert isinstance(series, HistogramSeries)
        before = earlier.get(labels)
        delta = list(series.counts)
        total = series.sum
        if isinstance(before, HistogramSeries):
            delta = [a - b for a, b in zip(delta, before.counts, strict=True)]
            total -= before.sum
        sparse = {i: n for i, n in enumerate(delta) if n > 0}
        if sparse:
            yield labels, sparse, max(total, 0.0)


_PAIRS: dict[tuple[str, str], tuple[str, str]] = {}
"""One tuple object per (model, version) and per (method, code), shared by every minute that holds it."""


def _pair(a: str, b: str) -> tuple[str, str]:
    pair = (a, b)
    return _PAIRS.setdefault(pair, pair) if len(_PAIRS) < 100_000 else pair


def difference(now: Reading, then: Reading) -> dict[Key, VersionMinute]:
    """Per (model, version): what `now` counted beyond `then`."""
    built: dict[Key, _Builder] = {}

    def of(labels: tuple[str, ...]) -> _Builder:
        key = _pair(labels[0], labels[1])
        builder = built.get(key)
        if builder is None:
            builder = built[key] = _Builder()
        return builder

    for labels, n in _counter(now, then, REQUESTS.name):
        of(labels).calls[_pair(labels[2], labels[3])] = n
    for labels, buckets, total in _histogram(now, then, REQUEST_DURATION.name):
        b = of(labels)
        for i, n in buckets.items():
            b.duration[i] = b.duration.get(i, 0) + n
        b.duration_sum += total
    for labels, _, total in _histogram(now, then, BATCH_SIZE.name):
        of(labels).rows += round(total)
    for labels, n in _counter(now, then, PREDICTIONS.name):
        of(labels).predictions[labels[2]] = n
    for labels, buckets, total in _histogram(now, then, CONFIDENCE.name):
        b = of(labels)
        b.confidence, b.confidence_sum = buckets, total
    for labels, n in _counter(now, then, FEEDBACK.name):
        of(labels).feedback = n
    for labels, n in _counter(now, then, FEEDBACK_CORRECT.name):
        of(labels).correct = n
    out = {key: b.build() for key, b in built.items()}
    return {key: minute for key, minute in out.items() if minute.is_active}
