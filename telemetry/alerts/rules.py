"""Alert rules: what a rule watches and compares, their validation, and the one-line summary of an alert.

A rule is one of three kinds: a fixed threshold (`value OP threshold`), an anomaly (the value leaves the band of its
own recent values) or a trend (a line fitted to recent values predicts `value OP threshold` within a horizon). The
rule is a frozen value; the engine in `vigil.telemetry.alerts.engine` evaluates it and tracks its alert instances.
"""

from __future__ import annotations

import enum
import logging
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from vigil.telemetry.alerts.detectors import Anomaly, BandTracker, Details, Tracker, Trend, TrendTracker

logger = logging.getLogger(__name__)

LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What a label name (and a rule name) must match, as in Prometheus."""

_PLACEHOLDER = re.compile(r"\{(model|version|value|threshold|baseline|lower|upper|current|predicted|eta)\}")
_RESERVED_LABELS = frozenset({"alertname", "severity"})


class Severity(enum.StrEnum):
    """How urgent an alert is; sent to Alertmanager as the `severity` label."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


COMPARISONS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
"""The comparison operators a rule may use, applied as `value OP threshold`."""


class RuleKind(enum.StrEnum):
    """What a rule compares a series' value with."""

    THRESHOLD = "threshold"
    ANOMALY = "anomaly"
    TREND = "trend"


_KIND_PLACEHOLDERS: Mapping[RuleKind, frozenset[str]] = {
    RuleKind.THRESHOLD: frozenset({"model", "version", "value", "threshold"}),
    RuleKind.ANOMALY: frozenset({"model", "version", "value", "baseline", "lower", "upper"}),
    RuleKind.TREND: frozenset({"model", "version", "value", "threshold", "current", "predicted", "eta"}),
}
_TREND_OPS = frozenset({">", ">=", "<", "<="})


class _FrozenMapping(Mapping[str, str]):
    """An immutable, hashable str → str mapping, iterated in key order."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._items = dict(sorted(dict(items).items()))

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)


def _check_str_mapping(what: str, mapping: object, *, label_names: bool) -> _FrozenMapping:
    try:
        items = dict(mapping)  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a mapping of str to str, got {mapping!r}") from exc
    for key, value in items.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"{what} must map str to str, got {key!r}: {value!r}")
        if label_names and not LABEL_NAME.fullmatch(key):
            raise ValueError(f"{what}: {key!r} is not a valid label name ([A-Za-z_][A-Za-z0-9_]*)")
    return _FrozenMapping(items)


def format_value(value: float) -> str:
    """A number as shown in summaries: up to six significant digits."""
    return f"{value:.6g}"


RATIO_SIGNALS = frozenset({"accuracy", "expected_accuracy", "error_ratio", "label_coverage"})
"""Signals that are fractions, shown as percentages."""
DRIFT_WORDS = {0: "no drift", 1: "possible drift", 2: "drift"}


def format_signal(signal: str, value: float, *, extra_digits: int = 0) -> str:
    """A signal's value as people read it, the same wherever it is shown: fractions as percentages with one
    decimal (0.839 → "83.9%"), latencies in milliseconds with two, drift status as its word, burn rates as a
    multiple, counts whole. `extra_digits` adds decimals (to tell a value from a threshold it nearly equals)."""
    if not math.isfinite(value):
        return format_value(value)
    if signal in RATIO_SIGNALS:
        return f"{100 * value:.{1 + extra_digits}f}%"
    if signal == "latency":
        return f"{1000 * value:.{2 + extra_digits}f} ms"
    if signal == "drift_status":
        return DRIFT_WORDS.get(math.floor(value + 0.5), format_value(value))
    if signal == "error_budget_burn":
        return f"{value:.{1 + extra_digits}f}×"
    if signal in ("queue_depth", "store_dropped_rows"):
        return f"{value:.{extra_digits}f}"
    if signal == "drift_score":
        return f"PSI {value:.{2 + extra_digits}f}"
    return format_value(value)


def format_apart(signal: str, value: float, threshold: float) -> tuple[str, str]:
    """The value and the threshold, formatted with the fewest extra decimals (up to four) that tell them apart:
    an accuracy of 0.8996 under a 0.9 threshold reads "89.96%", not "90.0%" beside "90.0%"."""
    plain = format_signal(signal, value), format_signal(signal, threshold)
    if math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12):  # equal but for floating point: say so plainly
        return plain
    for extra in range(5):
        shown = format_signal(signal, value, extra_digits=extra), format_signal(signal, threshold, extra_digits=extra)
        if shown[0] != shown[1]:
            return shown
    return plain


def format_duration(seconds: float) -> str:
    """Seconds as shown in summaries: "45s", "4m10s", "2h5m"; empty for NaN."""
    if math.isnan(seconds):
        return ""
    whole = max(round(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60}s" if whole % 60 else f"{whole // 60}m"
    return f"{whole // 3600}h{whole % 3600 // 60}m" if whole % 3600 // 60 else f"{whole // 3600}h"


@dataclass(frozen=True)
class AlertRule:
    """A condition on a signal's value that fires once it has held for `for_seconds`.

    The condition is `value OP threshold` (no `detection`), the value leaving its own band (`detection` an
    Anomaly: no threshold, `op` unused) or a fitted line reaching `OP threshold` within the horizon (`detection` a
    Trend: op <, <=, > or >=). `signal` and `params` are opaque to the engine: they tell the reader what to read.
    `labels` are added to every alert of the rule. `summary` may use the placeholders {model}, {version} and
    {value}, plus {threshold} (threshold and trend rules), {baseline}, {lower} and {upper} (anomaly rules: the
    band's centre and edges) and {current}, {predicted} and {eta} (trend rules: the observed value, the value
    predicted at the horizon, which is also {value}, and the time until the fitted line crosses the threshold).
    A rule with a `model` only considers series whose "model" label equals it; None means every model.

    >>> AlertRule(name="LatencySpike", signal="latency", detection=Anomaly(k=4, direction="above"))
    """

    name: str
    signal: str
    op: str = ">"
    threshold: float | None = None
    for_seconds: float = 0.0
    severity: str = Severity.WARNING
    labels: Mapping[str, str] = field(default_factory=_FrozenMapping)
    summary: str = ""
    model: str | None = None
    params: Mapping[str, str] = field(default_factory=_FrozenMapping)
    detection: Anomaly | Trend | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not LABEL_NAME.fullmatch(self.name):
            raise ValueError(f"alert rule name must match [A-Za-z_][A-Za-z0-9_]*, got {self.name!r}")
        if not isinstance(self.signal, str) or not self.signal:
            raise ValueError(f"alert rule {self.name}: signal must be a non-empty string, got {self.signal!r}")
        if self.op not in COMPARISONS:
            raise ValueError(f"alert rule {self.name}: op must be one of {', '.join(COMPARISONS)}, got {self.op!r}")
        if self.detection is not None and not isinstance(self.detection, Anomaly | Trend):
            raise ValueError(f"alert rule {self.name}: detection must be None, an Anomaly or a Trend, "
                             f"got {self.detection!r}")
        kind = self.kind
        if kind is RuleKind.ANOMALY:
            if self.threshold is not None:
                raise ValueError(f"alert rule {self.name}: an anomaly rule compares values with their own band "
                                 f"and takes no threshold, got {self.threshold!r}")
        elif isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float) \
                or not math.isfinite(self.threshold):
            raise ValueError(f"alert rule {self.name}: threshold must be a finite number, got {self.threshold!r}")
        if kind is RuleKind.TREND and self.op not in _TREND_OPS:
            raise ValueError(f"alert rule {self.name}: a trend rule's op must be one of "
                             f"{', '.join(sorted(_TREND_OPS))}, got {self.op!r}")
        if isinstance(self.for_seconds, bool) or not isinstance(self.for_seconds, int | float) \
                or not math.isfinite(self.for_seconds) or self.for_seconds < 0:
            raise ValueError(f"alert rule {self.name}: for_seconds must be a finite number >= 0, "
                             f"got {self.for_seconds!r}")
        if self.severity not in set(Severity):
            raise ValueError(f"alert rule {self.name}: severity must be one of "
                             f"{', '.join(s.value for s in Severity)}, got {self.severity!r}")
        if not isinstance(self.summary, str):
            raise ValueError(f"alert rule {self.name}: summary must be a string, got {self.summary!r}")
        misplaced = sorted({m.group(1) for m in _PLACEHOLDER.finditer(self.summary)} - _KIND_PLACEHOLDERS[kind])
        if misplaced:
            raise ValueError(f"alert rule {self.name}: summary placeholders "
                             f"{', '.join('{' + p + '}' for p in misplaced)} do not apply to {kind} rules")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError(f"alert rule {self.name}: model must be None or a non-empty string, got {self.model!r}")
        labels = _check_str_mapping(f"alert rule {self.name}: labels", self.labels, label_names=True)
        reserved = _RESERVED_LABELS.intersection(labels)
        if reserved:
            raise ValueError(f"alert rule {self.name}: labels must not set {', '.join(sorted(reserved))}; "
                             "they come from the rule's name and severity")
        params = _check_str_mapping(f"alert rule {self.name}: params", self.params, label_names=False)
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "for_seconds", float(self.for_seconds))
        object.__setattr__(self, "severity", Severity(self.severity))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "params", params)

    @property
    def kind(self) -> RuleKind:
        """THRESHOLD, ANOMALY or TREND, from `detection`."""
        if isinstance(self.detection, Anomaly):
            return RuleKind.ANOMALY
        if isinstance(self.detection, Trend):
            return RuleKind.TREND
        return RuleKind.THRESHOLD

    def holds(self, value: float) -> bool:
        """Whether `value OP threshold` is true; NaN never holds, nor does anything for an anomaly rule."""
        if math.isnan(value) or self.threshold is None:
            return False
        return COMPARISONS[self.op](value, self.threshold)

    def tracker(self) -> Tracker | None:
        """A fresh memory of one series for an anomaly or trend rule; None for a threshold rule."""
        if isinstance(self.detection, Anomaly):
            return BandTracker(self.detection)
        if isinstance(self.detection, Trend):
            assert self.threshold is not None
            return TrendTracker(self.detection, holds=self.holds, threshold=self.threshold)
        return None

    def summarize(self, labels: Mapping[str, str], value: float, details: Details) -> str:
        """The summary of one alert of the rule: `summary` with its placeholders filled from the alert's labels,
        value and verdict figures, or a generic line when the rule has none."""
        values = {name: "" for name in _KIND_PLACEHOLDERS[self.kind]}
        values.update({name: format_signal(self.signal, figure) for name, figure in details})
        values.update({
            "model": labels.get("model", self.model or ""),
            "version": labels.get("version", ""),
            "value": format_signal(self.signal, value),
        })
        if self.threshold is not None:
            values["value"], values["threshold"] = format_apart(self.signal, value, self.threshold)
        if "eta" in values:
            values["eta"] = format_duration(dict(details).get("eta", math.nan))
        if self.summary:
            return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), ""), self.summary)
        if isinstance(self.detection, Anomaly):
            return f"{self.signal} {values['value']} is outside its normal band [{values['lower']}, {values['upper']}]"
        if isinstance(self.detection, Trend):
            crossing = f", crossing in {values['eta']}" if values["eta"] else ""
            return (f"{self.signal} trends to {values['predicted']} in "
                    f"{format_duration(self.detection.horizon_seconds)} ({self.op} {values['threshold']}; now "
                    f"{values['current']}{crossing})")
        return f"{self.signal} {self.op} {values['threshold']} (value {values['value']})"
