"""The quality aggregates kept beside the prediction log, and the figures computed from them.

Every logged prediction and every label adds to small per-version counters keyed by a five-minute bucket of
prediction time: rows and summed confidence per confidence bin (all rows, and the labelled ones with how many were
right), the confusion matrix, and a histogram of label delays. Writes add deltas (a replaced label or an erasure
subtracts what it had added), so the figures of any window are sums over a few thousand counters however many
predictions the log holds, and every process sharing the store sees the same sums.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vigil.telemetry.quality.calibration import Calibration
from vigil.telemetry.quality.figures import WINDOWS, QualityFigures, ReliabilityBin, WindowFigures
from vigil.telemetry.quality.outcomes import LoggedPrediction, WindowMetrics

BUCKET_SECONDS = 300
"""Prediction-time resolution of the aggregates (windows are whole buckets: "the last hour" is the last 12)."""
BUCKETS_PER_DAY = 86_400 // BUCKET_SECONDS
CONFIDENCE_BINS = 10
DELAY_BINS = 24
"""Label-delay histogram: bin 0 is under 1 s, bin b (1..23) is [2^(b-1), 2^b) seconds; the last is open-ended."""

UNBOUNDED = 2**62
"""A bucket later than any (an open upper bound)."""

BIN_COLUMNS = ("rows", "confidence", "labelled", "labelled_confidence", "correct")
"""The counters per (version, bucket, confidence bin)."""

Key = tuple[str, str]


def bucket_of(at: float) -> int:
    return int(at // BUCKET_SECONDS)


def confidence_bin(confidence: float) -> int:
    return min(max(int(confidence * CONFIDENCE_BINS), 0), CONFIDENCE_BINS - 1)


def delay_bin(seconds: float) -> int:
    if seconds < 1:
        return 0
    return min(int(math.log2(seconds)) + 1, DELAY_BINS - 1)


class Deltas:
    """Changes to the aggregates from a batch of writes, summed per counter before they reach the store."""

    def __init__(self) -> None:
        self.bins: defaultdict[tuple[str, str, int, int], list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0, 0])
        self.confusion: defaultdict[tuple[str, str, int, int, int], int] = defaultdict(int)
        self.delays: defaultdict[tuple[str, str, int, int], int] = defaultdict(int)

    def predicted(self, p: LoggedPrediction, sign: int = 1) -> None:
        bucket = bucket_of(p.at)
        for confidence in p.top.tolist():
            cell = self.bins[(p.model, p.version, bucket, confidence_bin(confidence))]
            cell[0] += sign
            cell[1] += sign * confidence

    def labelled(self, key: Key, at: float, top: Sequence[float], predicted: Sequence[int], truth: Sequence[int],
                 labelled_at: float, sign: int = 1) -> None:
        """Add (or with sign -1, take away) the labels of one prediction."""
        model, version = key
        bucket = bucket_of(at)
        for confidence, p, t in zip(top, predicted, truth, strict=True):
            cell = self.bins[(model, version, bucket, confidence_bin(confidence))]
            cell[2] += sign
            cell[3] += sign * confidence
            cell[4] += sign * (p == t)
            self.confusion[(model, version, bucket, t, p)] += sign
        self.delays[(model, version, bucket, delay_bin(labelled_at - at))] += sign * len(truth)

    def bin_rows(self) -> list[tuple[str, str, int, int, int, float, int, float, int]]:
        return [(*k, int(v[0]), float(v[1]), int(v[2]), float(v[3]), int(v[4])) for k, v in self.bins.items()
                if any(v)]

    def confusion_rows(self) -> list[tuple[str, str, int, int, int, int]]:
        return [(*k, n) for k, n in self.confusion.items() if n]

    def delay_rows(self) -> list[tuple[str, str, int, int, int]]:
        return [(*k, n) for k, n in self.delays.items() if n]

    def __bool__(self) -> bool:
        return bool(self.bins or self.confusion or self.delays)


@dataclass
class Sums:
    """Aggregates summed over one window: bins × BIN_COLUMNS, the confusion matrix, the delay histogram."""

    bins: npt.NDArray[np.float64]
    confusion: npt.NDArray[np.int64]
    delays: npt.NDArray[np.int64]

    @classmethod
    def zero(cls, classes: int) -> Sums:
        return cls(np.zeros((CONFIDENCE_BINS, len(BIN_COLUMNS))), np.zeros((classes, classes), np.int64),
                   np.zeros(DELAY_BINS, np.int64))

    def add_bins(self, rows: Iterable[Sequence[float]]) -> None:
        """Rows of (bin, rows, confidence, labelled, labelled_confidence, correct)."""
        for b, *values in rows:
            self.bins[int(b)] += [float(v) for v in values]  # PostgreSQL sums bigints as numeric

    def add_confusion(self, rows: Iterable[Sequence[int]]) -> None:
        """Rows of (true class, predicted class, count); classes outside the matrix are ignored."""
        k = len(self.confusion)
        for t, p, n in rows:
            if 0 <= t < k and 0 <= p < k:
                self.confusion[int(t), int(p)] += int(n)

    def add_delays(self, rows: Iterable[Sequence[int]]) -> None:
        for b, n in rows:
            self.delays[int(b)] += int(n)


def _percentiles(histogram: npt.NDArray[np.int64]) -> tuple[float, float, float] | None:
    total = int(histogram.sum())
    if total == 0:
        return None
    cumulative = np.cumsum(histogram)
    upper = [2.0 ** b for b in range(DELAY_BINS)]  # bin b's upper bound; the open last bin reports its lower bound
    upper[-1] = 2.0 ** (DELAY_BINS - 2)

    def at(q: float) -> float:
        return upper[int(np.searchsorted(cumulative, q * total, side="left"))]

    return at(0.5), at(0.9), at(0.99)


def _expected(bins: npt.NDArray[np.float64], rows_column: int, calibration: Calibration | None) -> float | None:
    """Mean (calibrated) confidence of the rows counted in `rows_column`, from the per-bin sums."""
    counts = bins[:, rows_column]
    total = counts.sum()
    if total <= 0:
        return None
    means = np.divide(bins[:, rows_column + 1], counts, out=np.zeros(len(counts)), where=counts > 0)
    values = means if calibration is None else calibration.apply(means)
    return float((values * counts).sum() / total)


def window_figures(name: str, start: float, seconds: float, sums: Sums,
                   calibration: Calibration | None) -> WindowFigures:
    return WindowFigures(name=name, start=start, seconds=seconds, predictions=int(sums.bins[:, 0].sum()),
                         metrics=WindowMetrics(sums.confusion.copy()),
                         expected_labelled=_expected(sums.bins, 2, calibration),
                         expected_all=_expected(sums.bins, 0, calibration),
                         delay_percentiles=_percentiles(sums.delays))


def reliability(sums: Sums) -> tuple[ReliabilityBin, ...]:
    out = []
    for b, (_rows, _conf, labelled, labelled_conf, correct) in enumerate(sums.bins.tolist()):
        if labelled > 0:
            out.append(ReliabilityBin(b / CONFIDENCE_BINS, (b + 1) / CONFIDENCE_BINS, int(labelled),
                                      labelled_conf / labelled, correct / labelled))
    return tuple(out)


def recent_metrics(rows: Iterable[tuple[Sequence[int], Sequence[int]]], classes: int,
                   count_rows: int) -> WindowMetrics:
    """The confusion matrix of the newest `count_rows` labelled rows, from (predicted, truth) pairs newest first."""
    confusion = np.zeros((classes, classes), np.int64)
    taken = 0
    for predicted, truth in rows:
        for p, t in zip(reversed(predicted), reversed(truth), strict=True):  # a request's newest rows come last
            if taken >= count_rows:
                return WindowMetrics(confusion)
            if 0 <= t < classes and 0 <= p < classes:
                confusion[t, p] += 1
                taken += 1
    return WindowMetrics(confusion)


@dataclass(frozen=True)
class FigureRequest:
    """What to compute for one version."""

    model: str
    version: str
    labels: tuple[str, ...]
    count_rows: int
    timed_seconds: float
    retention_seconds: float
    calibration: Calibration | None = None


def assemble(request: FigureRequest, now: float, windows: dict[str, Sums], days: dict[int, Sums],
             recent: WindowMetrics, labelled_total: int) -> QualityFigures:
    """Figures from the sums the store read: `windows` by name ("time" and those of `WINDOWS`), `days` by UTC day
    number."""
    calibration = request.calibration
    named = tuple(window_figures(name, now - seconds, seconds, windows[name], calibration)
                  for name, seconds in WINDOWS)
    daily = tuple(window_figures(_date(day), day * 86_400.0, 86_400.0, sums, calibration)
                  for day, sums in sorted(days.items()))
    return QualityFigures(
        recent=recent, count_rows=request.count_rows,
        timed=window_figures("time", now - request.timed_seconds, request.timed_seconds, windows["time"],
                             calibration),
        labelled_total=labelled_total, windows=named, days=daily, reliability=reliability(windows["week"]),
        computed_at=now, labels=request.labels)


def window_starts(request: FigureRequest, now: float) -> dict[str, int]:
    """The first bucket of each window (a window is the whole buckets that end with the current one)."""
    current = bucket_of(now)
    spans = {"time": request.timed_seconds, **dict(WINDOWS)}
    return {name: current - max(int(math.ceil(seconds / BUCKET_SECONDS)), 1) + 1 for name, seconds in spans.items()}


def _date(day: int) -> str:
    return str(np.datetime_as_string(np.datetime64(day, "D")))
