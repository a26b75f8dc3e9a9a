"""The alert engine: rules evaluated over labelled signal values, and the pending → firing → resolved lifecycle of
their instances.

The engine is synchronous and keeps no clock of its own: every evaluation is given the current time (Unix seconds), so
the lifecycle, and the history anomaly and trend rules keep per series, can be driven deterministically. The rules
themselves are in `vigil.telemetry.alerts.rules`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from vigil.telemetry.alerts.detectors import Details, Tracker, Verdict
from vigil.telemetry.alerts.rules import LABEL_NAME, AlertRule

logger = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
"""A label set as a tuple of (name, value) pairs sorted by name."""

Series = tuple[Mapping[str, str], float]
"""One labelled value of a signal, e.g. ({"model": "m", "version": "1"}, 0.12)."""


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
        return self.rule.summarize(dict(self.labels), self.value, self.details)


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
                if not LABEL_NAME.fullmatch(name):
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
