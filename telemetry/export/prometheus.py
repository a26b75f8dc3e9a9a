"""The Prometheus `/metrics` view of the OpenTelemetry instruments, with trace-id exemplars on histograms.

`PrometheusReader` is a pull MetricReader; `PrometheusCollector` turns what it collects into prometheus_client
metric families on each scrape, converting names the way the collector's Prometheus exporter does (dots to
underscores, `_seconds`/`_bytes` unit suffixes, `_total` for monotonic sums).
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client.core import (
    CounterMetricFamily,
    Exemplar,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from vigil.telemetry.metrics.aggregates import Aggregates, AggregateSource

logger = logging.getLogger(__name__)


_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio", "W": "watts", "%": "percent"}


def prometheus_name(name: str, unit: str, *, counter: bool) -> str:
    """`vigil.request.duration` in `s` → `vigil_request_duration_seconds`; counters end in `_total` (added by
    prometheus_client, so the family name here omits it)."""
    base = "".join(c if c.isalnum() else "_" for c in name)
    suffix = _UNITS.get(unit, "") if unit and not unit.startswith("{") else ""
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if counter and base.endswith("_total"):
        base = base[: -len("_total")]
    return base


class PrometheusReader(MetricReader):
    """Metrics on demand (a scrape), cumulative, as Prometheus expects."""

    def __init__(self) -> None:
        super().__init__(
            preferred_temporality={kind: AggregationTemporality.CUMULATIVE for kind in _all_instrument_kinds()},
        )
        self._latest: MetricsData | None = None
        self._source: AggregateSource | None = None

    def include(self, aggregates: Aggregates, resource: Resource) -> None:
        """Add Vigil's own aggregates to every collection."""
        self._source = AggregateSource(aggregates, resource)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None

    def snapshot(self) -> MetricsData | None:
        """Collect now and return what the SDK produced."""
        self._latest = None
        self.collect()
        return self._latest if self._source is None else self._source.merge(self._latest)


def _all_instrument_kinds() -> list[type]:
    from opentelemetry.sdk.metrics import (
        Counter,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )
    from opentelemetry.sdk.metrics import (
        Histogram as HistogramInstrument,
    )

    return [Counter, UpDownCounter, HistogramInstrument, ObservableCounter, ObservableUpDownCounter, ObservableGauge]


class PrometheusCollector(Collector):
    """A prometheus_client collector over a PrometheusReader. Histogram exemplars come with the cumulative
    points: the aggregates keep the latest traced observation of every bucket."""

    def __init__(self, reader: PrometheusReader) -> None:
        self._reader = reader

    def collect(self) -> Iterator[Metric]:
        try:
            data = self._reader.snapshot()
        except Exception:  # a scrape must never break the server
            logger.exception("collecting metrics for /metrics failed")
            return
        if data is None:
            return
        for resource_metrics in data.resource_metrics:
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    family = _family(metric)
                    if family is not None:
                        yield family


def _labels(attributes: Any) -> dict[str, str]:
    return {"".join(c if c.isalnum() else "_" for c in k): str(v) for k, v in (attributes or {}).items()}




def _family(metric: Any) -> Metric | None:
    data = metric.data
    if isinstance(data, Sum):
        name = prometheus_name(metric.name, metric.unit, counter=data.is_monotonic)
        if data.is_monotonic:
            family: Metric = CounterMetricFamily(name, metric.description, labels=None)
        else:
            family = GaugeMetricFamily(name, metric.description)
        for value in data.data_points:
            family.add_sample(name + ("_total" if data.is_monotonic else ""), _labels(value.attributes), value.value)
        return family
    if isinstance(data, Gauge):
        name = prometheus_name(metric.name, metric.unit, counter=False)
        gauge = GaugeMetricFamily(name, metric.description)
        for number in data.data_points:
            gauge.add_sample(name, _labels(number.attributes), number.value)
        return gauge
    if isinstance(data, Histogram):
        name = prometheus_name(metric.name, metric.unit, counter=False)
        histogram = HistogramMetricFamily(name, metric.description, labels=None)
        for point in data.data_points:
            labels = _labels(point.attributes)
            exemplars = _exemplars_by_bucket(point)
            cumulative = 0
            buckets = []
            for index, bound in enumerate([*point.explicit_bounds, math.inf]):
                cumulative += point.bucket_counts[index]
                le = "+Inf" if math.isinf(bound) else repr(float(bound))
                buckets.append((le, float(cumulative), exemplars.get(index)))
            _add_histogram(histogram, labels, buckets, point.sum)
        return histogram
    return None


def _exemplars_by_bucket(point: Any) -> dict[int, Exemplar]:
    found: dict[int, Exemplar] = {}
    bounds = list(point.explicit_bounds)
    for exemplar in getattr(point, "exemplars", None) or ():
        if not exemplar.trace_id:
            continue
        index = bisect_left(bounds, exemplar.value)
        found[index] = Exemplar(
            {"trace_id": format(exemplar.trace_id, "032x"), "span_id": format(exemplar.span_id, "016x")},
            exemplar.value, exemplar.time_unix_nano / 1e9,
        )
    return found


def _add_histogram(family: HistogramMetricFamily, labels: dict[str, str],
                   buckets: list[tuple[str, float, Exemplar | None]], total: float) -> None:
    names = list(labels)
    values = [labels[n] for n in names]
    for le, count, exemplar in buckets:
        family.samples.append(_sample(family.name + "_bucket", dict(zip(names, values, strict=True), le=le), count,
                                      exemplar))
    family.samples.append(_sample(family.name + "_count", dict(labels), buckets[-1][1], None))
    family.samples.append(_sample(family.name + "_sum", dict(labels), total, None))


def _sample(name: str, labels: dict[str, str], value: float, exemplar: Exemplar | None) -> Sample:
    return Sample(name, labels, value, None, exemplar)
