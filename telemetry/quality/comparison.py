"""Versions of one model side by side over the same recent window: what a rollout's guard judges and what the
Telemetry stream's rollout section shows.

Served versions are read from the request counter and the request-duration histogram; a shadow version from its
own shadow counters and run-duration histogram. Class mix and confidence come from the quality instruments;
drift and accuracy from the quality monitor's current results. Windowed figures are differences of cumulative
readings kept in a short history, as the alert signals are.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from vigil.telemetry.metrics.aggregates import Aggregates, Histogram, Reading
from vigil.telemetry.metrics.instruments import (
    CONFIDENCE,
    PREDICTIONS,
    REQUEST_DURATION,
    REQUESTS,
    SHADOW_COMPARISONS,
    SHADOW_DURATION,
    SHADOW_REQUESTS,
)
from vigil.telemetry.quality.monitor import QualityMonitor
from vigil.telemetry.stream.frames import by_version, counts, quantile

HISTORY_POINTS = 150
"""Readings kept per longest window."""


@dataclass(frozen=True)
class VersionFigures:
    """One version over the window."""

    version: str
    requests: int = 0
    errors: int = 0
    p50_seconds: float = math.nan
    p99_seconds: float = math.nan
    predictions: dict[str, int] = field(default_factory=dict)
    mean_confidence: float | None = None
    drift_status: str = ""
    drift_score: float | None = None
    accuracy: float | None = None
    labelled_rows: int = 0
    compared_rows: int = 0
    agreed_rows: int = 0

    @property
    def error_ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def agreement(self) -> float | None:
        return self.agreed_rows / self.compared_rows if self.compared_rows else None


class Comparer:
    """Keeps readings of the aggregates and compares versions over a window of them.

    >>> comparer = Comparer(instruments.aggregates, quality_monitor, history_seconds=600)
    >>> comparer.observe(time.time())
    >>> comparer.figures("m", "2", shadow=False, window=300).p99_seconds
    """

    def __init__(self, aggregates: Aggregates, quality: QualityMonitor | None, *, history_seconds: float) -> None:
        if history_seconds <= 0:
            raise ValueError(f"history_seconds must be above 0, got {history_seconds}")
        self._aggregates = aggregates
        self._quality = quality
        self.history_seconds = history_seconds
        """The longest window asked for; settable (rollouts change at run time)."""
        self._history: deque[tuple[float, Reading]] = deque()
        self._latest: tuple[float, Reading] | None = None
        self.source: Callable[[], Reading] = aggregates.read
        """Where counts are read: this process's aggregates, or its fleet's sum."""
        self._bounds = {m.name: m.bounds for m in aggregates.members if isinstance(m, Histogram)}

    def observe(self, now: float, models: Collection[str] | None = None) -> None:
        """Take a reading, of `models`' series only when given. The history keeps at most about HISTORY_POINTS
        readings, evenly spaced over the longest window, so a day-long window costs no more memory than a minute-long
        one, and series of models without a rollout take none."""
        reading = self.source()
        if models is not None:
            wanted = set(models)
            reading = {name: _only(series, wanted) for name, series in reading.items()}
        self._latest = (now, reading)
        spacing = self.history_seconds / HISTORY_POINTS
        if not self._history or now - self._history[-1][0] >= spacing:
            self._history.append(self._latest)
        while len(self._history) > 2 and self._history[1][0] <= now - self.history_seconds:
            self._history.popleft()

    def _window(self, window: float) -> tuple[Reading, Reading | None]:
        """(newest reading, the newest kept one at least `window` older, or the oldest kept)."""
        assert self._latest is not None
        now_at, now = self._latest
        then: Reading | None = None
        for at, reading in self._history:
            if at > now_at - window:
                break
            then = reading
        if then is None and self._history and self._history[0][0] < now_at:
            then = self._history[0][1]
        return now, then

    def figures(self, model: str, version: str, *, shadow: bool, window: float) -> VersionFigures:
        """`model` `version`'s figures over the last `window` seconds (its shadow runs when `shadow`)."""
        if self._latest is None:
            return VersionFigures(version)
        now, then = self._window(window)
        request_counter, duration = ((SHADOW_REQUESTS.name, SHADOW_DURATION.name) if shadow
                                     else (REQUESTS.name, REQUEST_DURATION.name))
        requests = errors = 0
        before = counts(then, request_counter) if then is not None else {}
        for labels, total in counts(now, request_counter).items():
            if labels[0] != model or labels[1] != version:
                continue
            delta = total - before.get(labels, 0)
            requests += delta
            if labels[-1] != "OK":
                errors += delta
        bounds = self._bounds[duration]
        merged = by_version(now, then, duration, bounds).get((model, version))
        p50 = p99 = math.nan
        if merged is not None and sum(merged.counts) > 0:
            p50, p99 = quantile(0.5, bounds, merged.counts), quantile(0.99, bounds, merged.counts)
        predictions = _class_mix(now, then, model, version)
        confidence = by_version(now, then, CONFIDENCE.name,
                                self._bounds[CONFIDENCE.name]).get((model, version))
        rows = sum(confidence.counts) if confidence is not None else 0
        agreed, compared = _agreement(now, then, model, version)
        figures = VersionFigures(
            version, requests=requests, errors=errors, p50_seconds=p50, p99_seconds=p99, predictions=predictions,
            mean_confidence=confidence.sum / rows if confidence is not None and rows else None,
            compared_rows=compared, agreed_rows=agreed)
        return self._with_quality(figures, model)

    def _with_quality(self, figures: VersionFigures, model: str) -> VersionFigures:
        quality = self._quality.get(model, figures.version) if self._quality is not None else None
        if quality is None:
            return figures
        recent = quality.figures.recent
        drift = quality.drift
        return replace(
            figures, drift_status=drift.status.label if drift is not None else "",
            drift_score=max((f.psi for f in drift.features), default=None) if drift is not None else None,
            accuracy=recent.accuracy, labelled_rows=recent.rows)


def _only(series: Any, models: set[str]) -> Any:
    """The series of one aggregate whose first label, the model, is among `models`."""
    return {labels: value for labels, value in series.items() if labels and labels[0] in models}


def _class_mix(now: Reading, then: Reading | None, model: str, version: str) -> dict[str, int]:
    before = counts(then, PREDICTIONS.name) if then is not None else {}
    out: dict[str, int] = {}
    for labels, total in counts(now, PREDICTIONS.name).items():
        if labels[0] == model and labels[1] == version:
            delta = total - before.get(labels, 0)
            if delta:
                out[labels[2]] = delta
    return dict(sorted(out.items()))


def _agreement(now: Reading, then: Reading | None, model: str, version: str) -> tuple[int, int]:
    """(agreed rows, compared rows) of a shadow version over the window."""
    before = counts(then, SHADOW_COMPARISONS.name) if then is not None else {}
    agreed = compared = 0
    for labels, total in counts(now, SHADOW_COMPARISONS.name).items():
        if labels[0] == model and labels[1] == version:
            delta = total - before.get(labels, 0)
            compared += delta
            if labels[2] == "agree":
                agreed += delta
    return agreed, compared

