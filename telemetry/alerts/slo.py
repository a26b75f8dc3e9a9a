"""Service level objectives per model: good and total calls in per-minute buckets, the error budget left over the
objective's period, and burn rates over short windows (for multi-window, multi-burn-rate alerts).

Availability: a call is bad when the server failed it (UNAVAILABLE, INTERNAL, ...); callers' mistakes such as
INVALID_ARGUMENT or NOT_FOUND do not spend the budget. Latency: a call is good when answered within the bound,
which must be a bound of the request-duration histogram so the count is exact.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vigil.telemetry.metrics.aggregates import HistogramSeries, Reading
from vigil.telemetry.metrics.instruments import REQUEST_DURATION, REQUESTS

SERVER_FAULTS = frozenset({"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNKNOWN",
                           "DATA_LOSS"})
"""Status codes that spend an availability budget."""
BURN_WINDOWS = {"5m": 300.0, "30m": 1800.0, "1h": 3600.0, "6h": 21600.0}
"""Windows burn rates are exported over."""
BUCKET_SECONDS = 60.0


@dataclass(frozen=True)
class Objective:
    name: str
    kind: str
    """"availability" or "latency"."""
    objective: float
    period_seconds: float
    latency_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("availability", "latency"):
            raise ValueError(f"SLO {self.name}: kind must be availability or latency, not {self.kind!r}")
        if not 0 < self.objective < 1:
            raise ValueError(f"SLO {self.name}: objective must lie strictly between 0 and 1")
        if (self.kind == "latency") != (self.latency_seconds is not None):
            raise ValueError(f"SLO {self.name}: latency_seconds goes with latency objectives, and only with them")


class _Buckets:
    """Good and total calls per minute over one period."""

    def __init__(self, minutes: int) -> None:
        self.good = np.zeros(minutes, np.int64)
        self.total = np.zeros(minutes, np.int64)
        self.minute = -1

    def add(self, minute: int, good: int, total: int) -> None:
        size = len(self.total)
        if self.minute < 0:
            self.minute = minute
        if minute - self.minute >= size:  # the whole period skipped (e.g. a clock jump): clear it at once
            self.good[:] = self.total[:] = 0
            self.minute = minute
        while self.minute < minute:  # clear the minutes skipped since the last call
            self.minute += 1
            self.good[self.minute % size] = self.total[self.minute % size] = 0
        self.good[minute % size] += good
        self.total[minute % size] += total

    def sums(self, minute: int, minutes: int) -> tuple[int, int]:
        """Good and total over the `minutes` ending with `minute` (the current one included)."""
        size = len(self.total)
        minutes = min(minutes, size)
        indexes = np.arange(minute - minutes + 1, minute + 1)
        indexes = indexes[(indexes <= self.minute) & (indexes > self.minute - size)]
        return int(self.good[indexes % size].sum()), int(self.total[indexes % size].sum())


class SLOTracker:
    """Feed it cumulative readings (`observe`); ask for budgets and burn rates per objective and model."""

    def __init__(self, objectives: Sequence[Objective], duration_bounds: Sequence[float]) -> None:
        self.objectives = {o.name: o for o in objectives}
        self._bound_index: dict[str, int] = {}
        for o in objectives:
            if o.latency_seconds is not None:
                matches = [i for i, b in enumerate(duration_bounds) if math.isclose(b, o.latency_seconds)]
                if not matches:
                    raise ValueError(f"SLO {o.name}: latency_seconds={o.latency_seconds:g} is not a bound of the "
                                     f"request-duration histogram ({', '.join(f'{b:g}' for b in duration_bounds)})")
                self._bound_index[o.name] = matches[0]
        self._buckets: dict[tuple[str, str], _Buckets] = {}
        self._last: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._now = 0.0
        self._observed = False

    def observe(self, reading: Reading, now: float) -> None:
        """Add the calls made since the previous reading to the current minute."""
        totals = {name: self._totals(o, reading) for name, o in self.objectives.items()}
        minute = int(now // BUCKET_SECONDS)
        with self._lock:
            first, self._observed = not self._observed, True
            self._now = now
            for name, per_model in totals.items():
                period_minutes = max(int(math.ceil(self.objectives[name].period_seconds / BUCKET_SECONDS)), 1)
                for model, (good, total) in per_model.items():
                    key = (name, model)
                    # calls before the first reading have no minute; a model first seen later starts from 0
                    before = self._last.get(key, None if first else (0, 0))
                    self._last[key] = (good, total)
                    buckets = self._buckets.get(key)
                    if buckets is None:
                        buckets = self._buckets[key] = _Buckets(period_minutes)
                    if before is None:
                        buckets.add(minute, 0, 0)
                        continue
                    buckets.add(minute, max(good - before[0], 0), max(total - before[1], 0))

    def _totals(self, objective: Objective, reading: Reading) -> dict[str, tuple[int, int]]:
        out: dict[str, list[int]] = {}
        if objective.kind == "availability":
            for labels, count in reading.get(REQUESTS.name, {}).items():
                model, _version, _method, code = labels
                if model and isinstance(count, int):
                    entry = out.setdefault(model, [0, 0])
                    entry[1] += count
                    if code not in SERVER_FAULTS:
                        entry[0] += count
        else:
            index = self._bound_index[objective.name]
            for labels, series in reading.get(REQUEST_DURATION.name, {}).items():
                if labels[0] and isinstance(series, HistogramSeries):
                    entry = out.setdefault(labels[0], [0, 0])
                    entry[0] += sum(series.counts[:index + 1])
                    entry[1] += sum(series.counts)
        return {model: (good, total) for model, (good, total) in out.items()}

    def models(self, name: str) -> list[str]:
        with self._lock:
            return sorted(model for slo, model in self._buckets if slo == name)

    def burn_rate(self, name: str, model: str, window_seconds: float) -> float | None:
        """Bad fraction over the window divided by the allowed one (1 = spending the budget exactly over the
        period); None without calls in the window."""
        objective = self.objectives[name]
        with self._lock:
            buckets = self._buckets.get((name, model))
            if buckets is None:
                return None
            good, total = buckets.sums(int(self._now // BUCKET_SECONDS),
                                       max(int(math.ceil(window_seconds / BUCKET_SECONDS)), 1))
        if total == 0:
            return None
        return (total - good) / total / (1 - objective.objective)

    def budget_remaining(self, name: str, model: str) -> float | None:
        """Fraction of the period's error budget left (negative once overspent); None before any call."""
        objective = self.objectives[name]
        ratio = self.burn_rate(name, model, objective.period_seconds)
        return None if ratio is None else 1.0 - ratio

    def objective_readings(self) -> list[tuple[dict[str, str], float]]:
        """Each objective's target, labelled by slo."""
        return [({"slo": name}, objective.objective) for name, objective in self.objectives.items()]

    def remaining_readings(self) -> list[tuple[dict[str, str], float]]:
        """Budget left per slo and model (models with calls in the period)."""
        return [({"slo": name, "model": model}, remaining) for name in self.objectives for model in self.models(name)
                if (remaining := self.budget_remaining(name, model)) is not None]

    def burn_readings(self) -> list[tuple[dict[str, str], float]]:
        """Burn rate per slo, model and window (where the window has calls)."""
        return [({"slo": name, "model": model, "window": window}, rate)
                for name in self.objectives for model in self.models(name)
                for window, seconds in BURN_WINDOWS.items()
                if (rate := self.burn_rate(name, model, seconds)) is not None]

    def readings(self) -> Mapping[str, list[tuple[dict[str, str], float]]]:
        """Gauge values: objective, budget remaining and burn rate per window, labelled by slo and model."""
        return {"objective": self.objective_readings(), "remaining": self.remaining_readings(),
                "burn": self.burn_readings()}
