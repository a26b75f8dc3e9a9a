"""Quality by prediction time, as the prediction log computes it: accuracy, per-class metrics and the confusion
matrix of the labelled predictions in a window, label coverage and label delay, the label-free estimate beside the
realised accuracy of the same predictions, and reliability bins. Plain values: the server's store fills them on a
schedule; the stream, the gauges, the alert signals and the reports read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vigil.telemetry.quality.outcomes import WindowMetrics

WINDOWS: tuple[tuple[str, float], ...] = (("hour", 3600.0), ("day", 86_400.0), ("week", 7 * 86_400.0))
"""The named windows of prediction time every version's figures carry."""


@dataclass(frozen=True)
class WindowFigures:
    """The predictions made in one window of prediction time, and what their labels say."""

    name: str
    """"hour", "day", "week", or the UTC date of a day ("2026-12-03")."""
    start: float
    """Unix seconds the window starts at (windows end now, days at midnight UTC)."""
    seconds: float
    predictions: int
    """Rows predicted in the window."""
    metrics: WindowMetrics
    """Confusion matrix of the rows that have labels."""
    expected_labelled: float | None = None
    """Label-free expected accuracy of the labelled rows: what the model's confidence promised for them."""
    expected_all: float | None = None
    """Label-free expected accuracy of every row predicted in the window."""
    delay_percentiles: tuple[float, float, float] | None = None
    """Seconds from prediction to label (p50, p90, p99), from a histogram: each within one bucket (a factor of 2)."""

    @property
    def labelled(self) -> int:
        return self.metrics.rows

    @property
    def coverage(self) -> float | None:
        """Share of the window's predicted rows that have labels."""
        return self.labelled / self.predictions if self.predictions else None


@dataclass(frozen=True)
class ReliabilityBin:
    """Labelled rows whose top-class confidence fell in [lower, upper): how confident, and how often right."""

    lower: float
    upper: float
    rows: int
    mean_confidence: float
    accuracy: float


@dataclass(frozen=True)
class QualityFigures:
    """One model version's quality from the prediction log (fleet-wide when processes share the store)."""

    recent: WindowMetrics
    """The most recent labelled rows by prediction time (the count window)."""
    count_rows: int
    timed: WindowFigures
    """The window of `accuracy_window_seconds` of prediction time (the time window)."""
    labelled_total: int
    """Labelled rows the log holds for the version (within the retention period)."""
    windows: tuple[WindowFigures, ...] = ()
    """The last hour, day and week (see `WINDOWS`)."""
    days: tuple[WindowFigures, ...] = ()
    """Per UTC day of prediction time, oldest first, up to the retention period."""
    reliability: tuple[ReliabilityBin, ...] = ()
    """Reliability bins over the last week's labelled rows."""
    computed_at: float = 0.0
    labels: tuple[str, ...] = field(default=())


def empty_figures(classes: int, *, count_rows: int, seconds: float, now: float) -> QualityFigures:
    """Figures of a version nothing has been logged for yet."""
    nothing = WindowMetrics(np.zeros((classes, classes), np.int64))
    return QualityFigures(recent=nothing, count_rows=count_rows,
                          timed=WindowFigures("time", now - seconds, seconds, 0, nothing), labelled_total=0,
                          computed_at=now)
