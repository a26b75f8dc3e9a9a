"""Several processes' `/metrics` pages served as one page, so that one scrape covers a whole host.

Counters and histograms are summed across the pages, because the host's total is the sum of its processes'.
Each histogram bucket keeps the newest exemplar any process had. Gauges, and families of any other type, keep one
series per process, marked by a label such as `worker="0"`. The pages are read in the OpenMetrics format because
it carries exemplars.

When a process goes away (for example a worker that died and was replaced), its last totals are carried forward
with `retire`. Otherwise its restart from zero would make the host's counters drop, and Prometheus would count the
drop as a reset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample

logger = logging.getLogger(__name__)

SUMMED_TYPES = frozenset({"counter", "histogram"})
"""Family types whose samples are added up across processes; every other type is kept per process."""

_SKIPPED_SUFFIXES = ("_created",)
"""Samples that cannot be summed: a creation time is per process, and the host has no single one."""

_SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def parse_page(text: str) -> list[Metric]:
    """The families of an OpenMetrics page (raises ValueError when the page does not parse)."""
    return list(text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


@dataclass
class _Family:
    name: str
    documentation: str
    type: str
    unit: str
    values: dict[_SeriesKey, float] = field(default_factory=dict)
    exemplars: dict[_SeriesKey, Exemplar] = field(default_factory=dict)

    def add(self, sample: Sample, labels: dict[str, str]) -> None:
        key = (sample.name, tuple(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + sample.value
        exemplar = sample.exemplar
        if exemplar is not None:
            # the parser's timestamps are `Timestamp`s, which do not compare; seconds do
            seconds = float(exemplar.timestamp) if exemplar.timestamp is not None else None
            held = self.exemplars.get(key)
            if held is None or (seconds or 0.0) >= float(held.timestamp or 0.0):
                self.exemplars[key] = Exemplar(exemplar.labels, exemplar.value, seconds)

    def metric(self) -> Metric:
        metric = Metric(self.name, self.documentation, self.type, self.unit)
        for key, value in self.values.items():
            name, labels = key
            metric.add_sample(name, dict(labels), value, exemplar=self.exemplars.get(key))
        return metric


class MergedPages:
    """The families of several pages merged into one set; `retire` keeps the totals of a process that is gone.

    >>> merged = MergedPages(label="worker")
    >>> families = merged.merge({"0": parse_page(page_0), "1": parse_page(page_1)})
    >>> registry.register(FamiliesCollector(families))
    """

    def __init__(self, *, label: str) -> None:
        if not label.isidentifier():
            raise ValueError(f"label {label!r} is not a valid label name")
        self.label = label
        self._carried: dict[str, _Family] = {}

    def merge(self, pages: Mapping[str, Sequence[Metric]]) -> list[Metric]:
        """One family per name across `pages` (keyed by the label value that tells processes apart), in the order
        the names first appear; carried totals are included in the sums."""
        families: dict[str, _Family] = {name: _copy(family) for name, family in self._carried.items()}
        for process, page in pages.items():
            for metric in page:
                family = families.get(metric.name)
                if family is None:
                    family = families[metric.name] = _Family(metric.name, metric.documentation, metric.type,
                                                             metric.unit)
                elif family.type != metric.type:
                    logger.warning("metric %s is a %s in one process and a %s in another; the latter is left out",
                                   metric.name, family.type, metric.type)
                    continue
                summed = metric.type in SUMMED_TYPES
                for sample in metric.samples:
                    if sample.name.endswith(_SKIPPED_SUFFIXES):
                        continue
                    labels = dict(sample.labels) if summed else {**sample.labels, self.label: process}
                    family.add(sample, labels)
        return [family.metric() for family in families.values() if family.values]

    def retire(self, page: Iterable[Metric]) -> None:
        """Carry forward the counter and histogram totals of a process that has gone (its last page)."""
        for metric in page:
            if metric.type not in SUMMED_TYPES:
                continue
            family = self._carried.get(metric.name)
            if family is None:
                family = self._carried[metric.name] = _Family(metric.name, metric.documentation, metric.type,
                                                              metric.unit)
            elif family.type != metric.type:
                continue
            for sample in metric.samples:
                if not sample.name.endswith(_SKIPPED_SUFFIXES):
                    family.add(sample, dict(sample.labels))


def _copy(family: _Family) -> _Family:
    return _Family(family.name, family.documentation, family.type, family.unit, dict(family.values),
                   dict(family.exemplars))


class FamiliesCollector(Collector):
    """A collector that yields families already built (for a registry made for one scrape)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
