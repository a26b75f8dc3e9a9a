"""Alert rules over labelled signal values, and the pending → firing → resolved lifecycle of their instances.

A rule is one of three kinds: a fixed threshold (`value OP threshold`), an anomaly (the value leaves the band of its
own recent values) or a trend (a line fitted to recent values predicts `value OP threshold` within a horizon). The
engine is synchronous and keeps no clock of its own: every evaluation is given the current time (Unix seconds), so
the lifecycle, and the history anomaly and trend rules keep per series, can be driven deterministically.
"""

from __future__ import annotations

import enum
import logging
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from telemetry.detectors import Anomaly, BandTracker, Details, Tracker, Trend, TrendTracker, Verdict

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{(model|version|value|threshold|baseline|lower|upper|current|predicted|eta)\}")
_RESERVED_LABELS = frozenset({"alertname", "severity"})

Labels = tuple[tuple[str, str], ...]
"""A label set as a tuple of (name, value) pairs sorted by name."""

Series = tuple[Mapping[str, str], float]
"""One labelled value of a signal, e.g. ({"model": "m", "version": "1"}, 0.12)."""


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


class AlertState(enum.StrEnum):
    """Where an alert instance is in its lifecycle."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


class TransitionKind(enum.StrEnum):
    """The changes of state that are worth a notification."""

    FIRED = "fired"
    RESOLVED = "resolved"


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
        if label_names and not _NAME.fullmatch(key):
            raise ValueError(f"{what}: {key!r} is not a valid label name ([A-Za-z_][A-Za-z0-9_]*)")
    return _FrozenMapping(items)


def format_value(value: float) -> str:
    """A number as shown in summaries: up to six significant digits."""
    return f"{value:.6g}"


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
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
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


@dataclass(frozen=True)
class ActiveAlert:
    """One instance of a rule (one label set) as of the latest evaluation.

    `labels` is the full, sorted label set: the series labels, then the rule's labels, then `alertname` and
    `severity`. `active_since` is when the condition became true, `fired_at` when the instance started firing
    (None while pending) and `resolved_at` when it resolved (None until then). `details` are the figures of the
    latest verdict that the summary can show: an anomaly rule's band, a trend rule's prediction.
    """

    rule: AlertRule
    labels: Labels
    value: float
    active_since: float
    fired_at: float | None = None
    resolved_at: float | None = None
    details: Details = ()

    @property
    def state(self) -> AlertState:
        """PENDING, FIRING or RESOLVED, from the timestamps."""
        if self.resolved_at is not None:
            return AlertState.RESOLVED
        if self.fired_at is not None:
            return AlertState.FIRING
        return AlertState.PENDING

    @property
    def label_dict(self) -> dict[str, str]:
        """The labels as a new dict."""
        return dict(self.labels)

    @property
    def summary(self) -> str:
        """The rule's summary with its placeholders filled, or a generic one when the rule has none."""
        rule = self.rule
        labels = dict(self.labels)
        values = {name: "" for name in _KIND_PLACEHOLDERS[rule.kind]}
        values.update({name: format_value(figure) for name, figure in self.details})
        values.update({
            "model": labels.get("model", rule.model or ""),
            "version": labels.get("version", ""),
            "value": format_value(self.value),
        })
        if rule.threshold is not None:
            values["threshold"] = format_value(rule.threshold)
        if "eta" in values:
            values["eta"] = format_duration(dict(self.details).get("eta", math.nan))
        if rule.summary:
            return _PLACEHOLDER.sub(lambda match: values.get(match.group(1), ""), rule.summary)
        if isinstance(rule.detection, Anomaly):
            return f"{rule.signal} {values['value']} is outside its normal band [{values['lower']}, {values['upper']}]"
        if isinstance(rule.detection, Trend):
            crossing = f", crossing in {values['eta']}" if values["eta"] else ""
            return (f"{rule.signal} trends to {values['predicted']} in "
                    f"{format_duration(rule.detection.horizon_seconds)} ({rule.op} {values['threshold']}; now "
                    f"{values['current']}{crossing})")
        return f"{rule.signal} {rule.op} {values['threshold']} (value {values['value']})"


@dataclass(frozen=True)
class AlertTransition:
    """An instance that started firing or resolved, at evaluation time `at`."""

    kind: TransitionKind
    alert: ActiveAlert
    at: float


def _sort_key(alert: ActiveAlert) -> tuple[str, Labels]:
    return alert.rule.name, alert.labels


class AlertEngine:
    """Evaluates rules against the values a reader returns and tracks each alert instance's state.

    Anomaly and trend rules also keep each series' recent values (bounded by the rule's window); a series that a
    successful read no longer returns is forgotten, and starts a fresh warm-up if it comes back.

    >>> engine = AlertEngine([AlertRule(name="Backlog", signal="queue_depth", op=">", threshold=100)])
    >>> transitions = engine.evaluate(read, now=time.time())
    """

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        names: set[str] = set()
        for rule in rules:
            if not isinstance(rule, AlertRule):
                raise ValueError(f"rules must be AlertRule instances, got {rule!r}")
            if rule.name in names:
                raise ValueError(f"duplicate alert rule name {rule.name!r}")
            names.add(rule.name)
        self._rules = tuple(rules)
        self._active: dict[str, dict[Labels, ActiveAlert]] = {rule.name: {} for rule in self._rules}
        self._trackers: dict[str, dict[Labels, Tracker]] = {rule.name: {} for rule in self._rules}
        self._read_failing: set[str] = set()

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules, in the order given."""
        return self._rules

    def evaluate(self, read: Callable[[AlertRule], Sequence[Series]], now: float) -> list[AlertTransition]:
        """Reads every rule's series, advances each instance's state and returns what fired or resolved.

        A label set that a successful read no longer returns counts as false. When `read` raises for a rule,
        that rule's instances keep their state (the failure is logged once until a read succeeds again).
        Transitions come in rule order, then label order.
        """
        transitions: list[AlertTransition] = []
        for rule in self._rules:
            try:
                values = self._read(rule, read)
            except Exception as exc:
                if rule.name not in self._read_failing:
                    self._read_failing.add(rule.name)
                    logger.warning("Alert rule %s: reading signal %s failed (%s: %s); its alerts keep their "
                                   "state until a read succeeds", rule.name, rule.signal, type(exc).__name__, exc)
                continue
            if rule.name in self._read_failing:
                self._read_failing.discard(rule.name)
                logger.info("Alert rule %s: reading signal %s works again", rule.name, rule.signal)
            transitions.extend(self._advance(rule, self._judge(rule, values, now), now))
        return transitions

    def firing(self) -> list[ActiveAlert]:
        """The instances firing now, sorted by rule name and labels."""
        return self._in_state(AlertState.FIRING)

    def pending(self) -> list[ActiveAlert]:
        """The instances whose condition holds but whose `for_seconds` has not elapsed, sorted."""
        return self._in_state(AlertState.PENDING)

    def states(self) -> dict[tuple[str, Labels], AlertState]:
        """Every tracked instance's state, keyed by rule name and labels; inactive instances are absent."""
        return {(name, labels): alert.state
                for name, instances in self._active.items() for labels, alert in instances.items()}

    def _in_state(self, state: AlertState) -> list[ActiveAlert]:
        alerts = [alert for instances in self._active.values() for alert in instances.values() if alert.state is state]
        return sorted(alerts, key=_sort_key)

    @staticmethod
    def _read(rule: AlertRule, read: Callable[[AlertRule], Sequence[Series]]) -> dict[Labels, float]:
        """The rule's series as full alert label sets and values; a later duplicate label set wins.

        Raises ValueError for an invalid label name or a value that is not a number.
        """
        values: dict[Labels, float] = {}
        for series_labels, value in read(rule):
            series = {str(k): str(v) for k, v in series_labels.items()}
            for name in series:
                if not _NAME.fullmatch(name):
                    raise ValueError(f"series label name {name!r} is not a valid label name")
            if rule.model is not None and series.get("model") != rule.model:
                continue
            series.update(rule.labels)
            series["alertname"] = rule.name
            series["severity"] = str(rule.severity)
            values[tuple(sorted(series.items()))] = float(value)
        return values

    def _judge(self, rule: AlertRule, values: dict[Labels, float], now: float) -> dict[Labels, Verdict]:
        """Each series' verdict; anomaly and trend rules judge against, then update, the series' memory."""
        if rule.detection is None:
            return {labels: Verdict(rule.holds(value), value) for labels, value in values.items()}
        trackers = self._trackers[rule.name]
        for gone in set(trackers) - set(values):
            # Its history describes a run that has ended (a version unloaded, traffic stopped): keeping it would
            # judge a later comeback against stale values, and memory would grow with every label set ever seen.
            del trackers[gone]
        verdicts: dict[Labels, Verdict] = {}
        for labels, value in values.items():
            tracker = trackers.get(labels) or rule.tracker()
            assert tracker is not None  # the rule has a detection
            trackers[labels] = tracker
            verdicts[labels] = tracker.judge(value, now)
        return verdicts

    def _advance(self, rule: AlertRule, verdicts: dict[Labels, Verdict], now: float) -> list[AlertTransition]:
        instances = self._active[rule.name]
        transitions: list[AlertTransition] = []
        for labels in sorted(set(instances) | set(verdicts)):
            previous = instances.get(labels)
            verdict = verdicts.get(labels)
            if verdict is None or not verdict.holds:
                if previous is None:
                    continue
                del instances[labels]
                if previous.fired_at is not None:
                    # A series that is gone resolves with the last value seen; a verdict without figures (an
                    # anomaly baseline learning again) keeps the figures the alert last showed.
                    latest = verdict.value if verdict is not None else previous.value
                    details = verdict.details if verdict is not None and verdict.details else previous.details
                    resolved = ActiveAlert(rule, labels, latest, previous.active_since, previous.fired_at, now,
                                           details)
                    transitions.append(AlertTransition(TransitionKind.RESOLVED, resolved, now))
                continue
            active_since = now if previous is None else previous.active_since
            fired_at = None if previous is None else previous.fired_at
            alert = ActiveAlert(rule, labels, verdict.value, active_since, fired_at, details=verdict.details)
            if fired_at is None and now - active_since >= rule.for_seconds:
                alert = ActiveAlert(rule, labels, verdict.value, active_since, now, details=verdict.details)
                transitions.append(AlertTransition(TransitionKind.FIRED, alert, now))
            instances[labels] = alert
        return transitions
