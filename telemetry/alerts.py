"""Alert rules over labelled signal values, and the pending → firing → resolved lifecycle of their instances.

The engine is synchronous and keeps no clock of its own: every evaluation is given the current time
(Unix seconds), so the lifecycle can be driven deterministically.
"""

from __future__ import annotations

import enum
import logging
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{(model|version|value|threshold)\}")
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


@dataclass(frozen=True)
class AlertRule:
    """A condition `signal OP threshold` that fires once it has held for `for_seconds`.

    `signal` and `params` are opaque to the engine: they tell the reader what to read. `labels` are added to
    every alert of the rule. `summary` may use the placeholders {model}, {version}, {value} and {threshold}.
    A rule with a `model` only considers series whose "model" label equals it; None means every model.
    """

    name: str
    signal: str
    op: str
    threshold: float
    for_seconds: float = 0.0
    severity: str = Severity.WARNING
    labels: Mapping[str, str] = field(default_factory=_FrozenMapping)
    summary: str = ""
    model: str | None = None
    params: Mapping[str, str] = field(default_factory=_FrozenMapping)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(f"alert rule name must match [A-Za-z_][A-Za-z0-9_]*, got {self.name!r}")
        if not isinstance(self.signal, str) or not self.signal:
            raise ValueError(f"alert rule {self.name}: signal must be a non-empty string, got {self.signal!r}")
        if self.op not in COMPARISONS:
            raise ValueError(f"alert rule {self.name}: op must be one of {', '.join(COMPARISONS)}, got {self.op!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float) \
                or not math.isfinite(self.threshold):
            raise ValueError(f"alert rule {self.name}: threshold must be a finite number, got {self.threshold!r}")
        if isinstance(self.for_seconds, bool) or not isinstance(self.for_seconds, int | float) \
                or not math.isfinite(self.for_seconds) or self.for_seconds < 0:
            raise ValueError(f"alert rule {self.name}: for_seconds must be a finite number >= 0, "
                             f"got {self.for_seconds!r}")
        if self.severity not in set(Severity):
            raise ValueError(f"alert rule {self.name}: severity must be one of "
                             f"{', '.join(s.value for s in Severity)}, got {self.severity!r}")
        if not isinstance(self.summary, str):
            raise ValueError(f"alert rule {self.name}: summary must be a string, got {self.summary!r}")
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError(f"alert rule {self.name}: model must be None or a non-empty string, got {self.model!r}")
        labels = _check_str_mapping(f"alert rule {self.name}: labels", self.labels, label_names=True)
        reserved = _RESERVED_LABELS.intersection(labels)
        if reserved:
            raise ValueError(f"alert rule {self.name}: labels must not set {', '.join(sorted(reserved))}; "
                             "they come from the rule's name and severity")
        params = _check_str_mapping(f"alert rule {self.name}: params", self.params, label_names=False)
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "for_seconds", float(self.for_seconds))
        object.__setattr__(self, "severity", Severity(self.severity))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "params", params)

    def holds(self, value: float) -> bool:
        """Whether `value OP threshold` is true; NaN never holds."""
        if math.isnan(value):
            return False
        return COMPARISONS[self.op](value, self.threshold)


@dataclass(frozen=True)
class ActiveAlert:
    """One instance of a rule (one label set) as of the latest evaluation.

    `labels` is the full, sorted label set: the series labels, then the rule's labels, then `alertname` and
    `severity`. `active_since` is when the condition became true, `fired_at` when the instance started firing
    (None while pending) and `resolved_at` when it resolved (None until then).
    """

    rule: AlertRule
    labels: Labels
    value: float
    active_since: float
    fired_at: float | None = None
    resolved_at: float | None = None

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
        labels = dict(self.labels)
        values = {
            "model": labels.get("model", self.rule.model or ""),
            "version": labels.get("version", ""),
            "value": format_value(self.value),
            "threshold": format_value(self.rule.threshold),
        }
        if not self.rule.summary:
            return f"{self.rule.signal} {self.rule.op} {values['threshold']} (value {values['value']})"
        return _PLACEHOLDER.sub(lambda match: values[match.group(1)], self.rule.summary)


@dataclass(frozen=True)
class AlertTransition:
    """An instance that started firing or resolved, at evaluation time `at`."""

    kind: TransitionKind
    alert: ActiveAlert
    at: float


def _sort_key(alert: ActiveAlert) -> tuple[str, Labels]:
    return alert.rule.name, alert.labels


class AlertEngine:
    """Evaluates rules against the values a reader returns and tracks each alert instance's state."""

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
            transitions.extend(self._advance(rule, values, now))
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

    def _advance(self, rule: AlertRule, values: dict[Labels, float], now: float) -> list[AlertTransition]:
        instances = self._active[rule.name]
        transitions: list[AlertTransition] = []
        for labels in sorted(set(instances) | set(values)):
            previous = instances.get(labels)
            value = values.get(labels, math.nan)
            if not rule.holds(value):
                if previous is None:
                    continue
                del instances[labels]
                if previous.fired_at is not None:
                    latest = value if labels in values else previous.value
                    resolved = ActiveAlert(rule, labels, latest, previous.active_since, previous.fired_at, now)
                    transitions.append(AlertTransition(TransitionKind.RESOLVED, resolved, now))
                continue
            active_since = now if previous is None else previous.active_since
            fired_at = None if previous is None else previous.fired_at
            if fired_at is None and now - active_since >= rule.for_seconds:
                fired_at = now
                alert = ActiveAlert(rule, labels, value, active_since, fired_at)
                transitions.append(AlertTransition(TransitionKind.FIRED, alert, now))
            else:
                alert = ActiveAlert(rule, labels, value, active_since, fired_at)
            instances[labels] = alert
        return transitions
