"""Counters and histograms the request path records into, pre-aggregated in place.

One record is a dictionary lookup, a bisect and a few additions under a lock (about a microsecond), whoever reads
the results: the Prometheus page, the OTLP exporter and the Telemetry stream all read the same totals, so adding a
reader adds no cost per request. Readers get cumulative totals (`read`) and, for OpenTelemetry exporters, the
same totals as SDK metric points (`to_metrics`), cumulative or as deltas since the previous export.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import (
    Histogram as HistogramData,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

Labels = tuple[str, ...]
SCOPE = "vigil"
"""The instrumentation scope of every Vigil metric (the meter name)."""


@dataclass(frozen=True)
class ExemplarPoint:
    """The latest traced observation that fell in one bucket."""

    value: float
    time_ns: int
    trace_id: int
    span_id: int


@dataclass
class HistogramSeries:
    """Cumulative totals of one label set: `counts[i]` observations in bucket i (the last is +Inf)."""

    counts: list[int]
    sum: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    exemplars: dict[int, ExemplarPoint] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def minus(self, earlier: HistogramSeries | None) -> HistogramSeries:
        """The observations recorded since `earlier` (min and max stay the cumulative ones)."""
        if earlier is None:
            return self
        return HistogramSeries([a - b for a, b in zip(self.counts, earlier.counts, strict=True)],
                               self.sum - earlier.sum, self.min, self.max,
                               {i: e for i, e in self.exemplars.items() if earlier.exemplars.get(i) != e})


class Counter:
    """A monotonic count per label set, e.g. requests by model, version, method and code."""

    def __init__(self, name: str, unit: str, description: str, label_names: Sequence[str]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.label_names = tuple(label_names)
        self._values: dict[Labels, int] = {}
        self._lock = threading.Lock()

    def add(self, labels: Labels, amount: int = 1) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def read(self) -> dict[Labels, int]:
        with self._lock:
            return dict(self._values)


class Histogram:
    """Observations in fixed buckets per label set (bucket upper bounds are inclusive, as in Prometheus)."""

    def __init__(self, name: str, unit: str, description: str, bounds: Sequence[float],
                 label_names: Sequence[str]) -> None:
        self.name, self.unit, self.description = name, unit, description
        self.bounds = tuple(float(b) for b in bounds)
        self.label_names = tuple(label_names)
        self._series: dict[Labels, HistogramSeries] = {}
        self._lock = threading.Lock()

    def record(self, value: float, labels: Labels, exemplar: tuple[int, int] | None = None) -> None:
        """Add one observation; `exemplar` is the (trace id, span id) of a traced call, kept per bucket."""
        index = bisect_left(self.bounds, value)
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = HistogramSeries([0] * (len(self.bounds) + 1))
            series.counts[index] += 1
            series.sum += value
            if value < series.min:
                series.min = value
            if value > series.max:
                series.max = value
            if exemplar is not None:
                series.exemplars[index] = ExemplarPoint(value, time.time_ns(), exemplar[0], exemplar[1])

    def record_many(self, values: Sequence[float], labels: Labels) -> None:
        """Add several observations of one label set under one lock (e.g. the queue waits of a batch)."""
        if not values:
            return
        indexes = [bisect_left(self.bounds, v) for v in values]
        low, high, total = min(values), max(values), sum(values)
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = HistogramSeries([0] * (len(self.bounds) + 1))
            counts = series.counts
            for index in indexes:
                counts[index] += 1
            series.sum += total
            series.min = min(series.min, low)
            series.max = max(series.max, high)

    def record_array(self, values: npt.NDArray[np.floating[Any]], labels: Labels) -> None:
        """Add many observations of one label set, counted into buckets with numpy (e.g. a batch's confidences)."""
        if len(values) == 0:
            return
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1)
        low, high, total = float(values.min()), float(values.max()), float(values.sum())
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = HistogramSeries([0] * (len(self.bounds) + 1))
            series.counts = [a + int(b) for a, b in zip(series.counts, counts, strict=True)]
            series.sum += total
            series.min = min(series.min, low)
            series.max = max(series.max, high)

    def read(self) -> dict[Labels, HistogramSeries]:
        with self._lock:
            return {labels: HistogramSeries(list(s.counts), s.sum, s.min, s.max, dict(s.exemplars))
                    for labels, s in self._series.items()}


Aggregate = Counter | Histogram
Reading = dict[str, dict[Labels, int] | dict[Labels, HistogramSeries]]
"""Every aggregate's `read()`, by name."""


class Aggregates:
    """The set of aggregates one server records into, and their conversion to OpenTelemetry metric points."""

    def __init__(self, members: Sequence[Aggregate]) -> None:
        self.members = tuple(members)
        self.start_ns = time.time_ns()

    def read(self) -> Reading:
        return {member.name: member.read() for member in self.members}

    def to_metrics(self, reading: Reading, since: Reading | None, since_ns: int, *,
                   delta_counters: bool = False, delta_histograms: bool = False) -> list[Metric]:
        """SDK metrics for `reading`: cumulative from server start, or as deltas from `since` (taken at
        `since_ns`) for the kinds asked for."""
        now = time.time_ns()
        metrics = []
        for member in self.members:
            values = reading.get(member.name, {})
            delta = delta_counters if isinstance(member, Counter) else delta_histograms
            earlier = (since or {}).get(member.name, {}) if delta else {}
            start = since_ns if delta else self.start_ns
            temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
            if isinstance(member, Counter):
                points = [NumberDataPoint(dict(zip(member.label_names, labels, strict=True)), start, now,
                                          int(n) - int(earlier.get(labels, 0)))  # type: ignore[arg-type]
                          for labels, n in values.items()]
                metrics.append(Metric(member.name, member.description, member.unit,
                                      Sum(points, temporality, is_monotonic=True)))
                continue
            histogram_points = []
            for labels, series in values.items():
                assert isinstance(series, HistogramSeries)
                previous = earlier.get(labels)
                part = series.minus(previous if isinstance(previous, HistogramSeries) else None)
                histogram_points.append(HistogramDataPoint(
                    dict(zip(member.label_names, labels, strict=True)), start, now, part.count, part.sum,
                    part.counts, member.bounds, part.min, part.max,
                    [Exemplar({}, e.value, e.time_ns, e.span_id, e.trace_id)
                     for _, e in sorted(part.exemplars.items())],
                ))
            metrics.append(Metric(member.name, member.description, member.unit,
                                  HistogramData(histogram_points, temporality)))
        return metrics


class AggregateSource:
    """What a metric reader adds to each collection: the aggregates, cumulative or as deltas between collections."""

    def __init__(self, aggregates: Aggregates, resource: Resource, *, delta_counters: bool = False,
                 delta_histograms: bool = False) -> None:
        self._aggregates = aggregates
        self._resource = resource
        self._delta = {"delta_counters": delta_counters, "delta_histograms": delta_histograms}
        self._previous: Reading = {}
        self._previous_ns = aggregates.start_ns

    def merge(self, data: MetricsData | None) -> MetricsData:
        """`data` from the SDK (the observable gauges) with the aggregates added as one more scope."""
        now = time.time_ns()
        reading = self._aggregates.read()
        metrics = self._aggregates.to_metrics(reading, self._previous, self._previous_ns, **self._delta)
        self._previous, self._previous_ns = reading, now
        if data is None or not data.resource_metrics:
            scope = ScopeMetrics(InstrumentationScope(SCOPE), metrics, "")
            return MetricsData([ResourceMetrics(self._resource, [scope], "")])
        # Into the SDK's own "vigil" scope where there is one: exporters key scopes by name, so two would collide.
        first, *rest = data.resource_metrics
        scopes = [s for s in first.scope_metrics if s.scope.name != SCOPE]
        ours = [s for s in first.scope_metrics if s.scope.name == SCOPE]
        schema = ours[0].schema_url if ours else ""
        merged = ScopeMetrics(InstrumentationScope(SCOPE), [m for s in ours for m in s.metrics] + metrics, schema)
        return MetricsData([ResourceMetrics(first.resource, [*scopes, merged], first.schema_url), *rest])
