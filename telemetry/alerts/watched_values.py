"""The values alert rules watch, per model version (or per model for SLO burn rates), read on each evaluation.

Windowed signals (error ratio, latency percentiles) are differences of the cumulative aggregates between now and
the reading one window ago, kept in a short history bounded by the longest window a rule asks for.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vigil.telemetry.alerts.slo import SLOTracker
from vigil.telemetry.metrics.aggregates import Aggregates, Reading
from vigil.telemetry.metrics.instruments import (
    INFERENCE_DURATION,
    QUEUE_DURATION,
    REQUEST_DURATION,
    REQUESTS,
    STORE_DROPPED_ROWS,
)
from vigil.telemetry.quality.monitor import QualityMonitor
from vigil.telemetry.stream.frames import by_version, counts, quantile

Series = tuple[Mapping[str, str], float]

_STAGES = {"request": REQUEST_DURATION.name, "queue": QUEUE_DURATION.name,
           "inference": INFERENCE_DURATION.name}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in "30s", "5m", "1h" or "1d"; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h or 1d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


@dataclass(frozen=True)
class ServingState:
    """One model version's state as the rules see it."""

    model: str
    version: str
    ready: bool
    queue_depth: int


ACCURACY_WINDOWS = ("count", "time", "hour", "day", "week")
"""The count window, the time window, and the windows of prediction time (label coverage: the last three)."""


def rule_window(signal: str, params: Mapping[str, str]) -> float:
    """Seconds of history a rule needs (0 for instantaneous signals); ValueError for bad parameters."""
    if signal in ("error_ratio", "latency"):
        if signal == "latency":
            q = float(params.get("quantile", "0.99"))
            if not 0 < q < 1:
                raise ValueError(f"quantile must lie between 0 and 1, not {q}")
            if params.get("stage", "request") not in _STAGES:
                raise ValueError(f"stage must be one of {sorted(_STAGES)}")
        return parse_duration(params.get("window", "5m"))
    if signal == "drift_status" and params.get("test", "any") not in ("psi", "ks", "chi2", "any"):
        raise ValueError("test must be psi, ks, chi2 or any")
    if signal in ("accuracy", "label_coverage") and params.get("window", "count") not in ACCURACY_WINDOWS:
        raise ValueError(f"window must be one of {', '.join(ACCURACY_WINDOWS)}")
    if signal == "store_dropped_rows":
        return parse_duration(params.get("window", "5m"))
    if signal == "error_budget_burn":
        windows = [parse_duration(w) for w in params.get("windows", "1h").split(",")]
        if not windows:
            raise ValueError("windows must name at least one window")
    return 0.0


class SignalReader:
    """Reads each signal for a rule as labelled values; call `observe` once per evaluation first."""

    def __init__(self, aggregates: Aggregates, *, serving: Callable[[], Sequence[ServingState]],
                 quality: QualityMonitor | None, slo: SLOTracker | None, history_seconds: float,
                 rolled_back: Callable[[], Iterable[Series]] | None = None) -> None:
        self._aggregates = aggregates
        self._serving = serving
        self._quality = quality
        self._slo = slo
        self._history_seconds = history_seconds
        self._rolled_back = rolled_back
        self._history: deque[tuple[float, Reading]] = deque()
        self.source: Callable[[], Reading] = aggregates.read
        """Where counts are read: this process's aggregates, or its fleet's sum."""
        self._bounds = {h.name: h.bounds for h in aggregates.members if hasattr(h, "bounds")}

    def observe(self, now: float) -> Reading:
        """Take a reading of the aggregates and keep it as long as a window needs it."""
        reading = self.source()
        self._history.append((now, reading))
        while len(self._history) > 2 and self._history[1][0] <= now - self._history_seconds:
            self._history.popleft()
        return reading

    def set_serving(self, serving: Callable[[], Sequence[ServingState]]) -> None:
        """Read the serving state from elsewhere (the fleet's)."""
        self._serving = serving

    def _baseline(self, window: float) -> Reading:
        """The newest reading at least `window` old, or the oldest kept."""
        now = self._history[-1][0]
        chosen = self._history[0][1]
        for at, reading in self._history:
            if at > now - window:
                break
            chosen = reading
        return chosen

    def read(self, signal: str, params: Mapping[str, str], model: str | None) -> list[Series]:
        """Labelled values of `signal` (every model, or only `model`)."""
        values = getattr(self, f"_{signal}")(params)
        return [(labels, value) for labels, value in values
                if (model is None or labels.get("model") == model) and not math.isnan(value)]

    def _error_ratio(self, params: Mapping[str, str]) -> list[Series]:
        if not self._history:
            return []
        now = counts(self._history[-1][1], REQUESTS.name)
        then = counts(self._baseline(parse_duration(params.get("window", "5m"))), REQUESTS.name)
        totals: dict[tuple[str, str], list[int]] = {}
        for labels, total in now.items():
            model, version, _method, code = labels
            delta = total - then.get(labels, 0)
            entry = totals.setdefault((model, version), [0, 0])
            entry[1] += delta
            if code != "OK":
                entry[0] += delta
        return [({"model": m, "version": v}, bad / all_) for (m, v), (bad, all_) in sorted(totals.items())
                if all_ > 0 and m]

    def _latency(self, params: Mapping[str, str]) -> list[Series]:
        if not self._history:
            return []
        name = _STAGES[params.get("stage", "request")]
        q = float(params.get("quantile", "0.99"))
        bounds = self._bounds[name]
        then = self._baseline(parse_duration(params.get("window", "5m")))
        merged = by_version(self._history[-1][1], then, name, bounds)
        return [({"model": m, "version": v}, quantile(q, bounds, part.counts))
                for (m, v), part in sorted(merged.items()) if m and sum(part.counts) > 0]

    def _rollout_rolled_back(self, params: Mapping[str, str]) -> list[Series]:
        """1 per model version a rollout's guard took out of its split (until a new rollout is set)."""
        return list(self._rolled_back()) if self._rolled_back is not None else []

    def _queue_depth(self, params: Mapping[str, str]) -> list[Series]:
        return [({"model": s.model, "version": s.version}, float(s.queue_depth)) for s in self._serving()]

    def _model_ready(self, params: Mapping[str, str]) -> list[Series]:
        return [({"model": s.model, "version": s.version}, 1.0 if s.ready else 0.0) for s in self._serving()]

    def _quality_versions(self) -> list[Any]:
        return self._quality.versions() if self._quality is not None else []

    def _drift_status(self, params: Mapping[str, str]) -> list[Series]:
        test = params.get("test", "any")
        return [({"model": q.model, "version": q.version}, float(q.drift.worst(test)))
                for q in self._quality_versions() if q.drift is not None]

    def _drift_score(self, params: Mapping[str, str]) -> list[Series]:
        return [({"model": q.model, "version": q.version}, max((f.psi for f in q.drift.features), default=0.0))
                for q in self._quality_versions() if q.drift is not None]

    def _accuracy(self, params: Mapping[str, str]) -> list[Series]:
        out: list[Series] = []
        window = params.get("window", "count")
        for q in self._quality_versions():
            figures = q.figures
            if window == "count":
                accuracy = figures.recent.accuracy
            elif window == "time":
                accuracy = figures.timed.metrics.accuracy
            else:
                accuracy = next((w.metrics.accuracy for w in figures.windows if w.name == window), None)
            if accuracy is not None:
                out.append(({"model": q.model, "version": q.version}, accuracy))
        return out

    def _label_coverage(self, params: Mapping[str, str]) -> list[Series]:
        window = params.get("window", "day")
        return [({"model": q.model, "version": q.version}, c) for q in self._quality_versions()
                for w in q.figures.windows if w.name == window and (c := w.coverage) is not None]

    def _store_dropped_rows(self, params: Mapping[str, str]) -> list[Series]:
        """Predictions the store could not take, over the window (one series, no model)."""
        if not self._history:
            return []
        now = counts(self._history[-1][1], STORE_DROPPED_ROWS.name).get((), 0)
        then = counts(self._baseline(parse_duration(params.get("window", "5m"))), STORE_DROPPED_ROWS.name).get((), 0)
        return [({}, float(now - then))]

    def _expected_accuracy(self, params: Mapping[str, str]) -> list[Series]:
        out: list[Series] = []
        for q in self._quality_versions():
            estimate = q.expected_accuracy()
            if estimate is not None:
                out.append(({"model": q.model, "version": q.version}, estimate))
        return out

    def _error_budget_burn(self, params: Mapping[str, str]) -> list[Series]:
        slo = self._slo
        name = params.get("slo", "")
        if slo is None or name not in slo.objectives:
            return []
        windows = [parse_duration(w) for w in params.get("windows", "1h").split(",")]
        out: list[Series] = []
        for model in slo.models(name):
            rates = [slo.burn_rate(name, model, w) for w in windows]
            if all(r is not None for r in rates):
                out.append(({"model": model}, min(r for r in rates if r is not None)))
        return out
