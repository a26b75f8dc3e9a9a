"""Alert rules and the lifecycle of their instances, on a clock that the tests advance by hand."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import pytest

from vigil.telemetry.alerts.engine import (
    ActiveAlert,
    AlertEngine,
    AlertState,
    AlertTransition,
    Series,
    TransitionKind,
)
from vigil.telemetry.alerts.rules import AlertRule, Severity

M1 = {"model": "m", "version": "1"}
M2 = {"model": "m", "version": "2"}


class Signal:
    """A reader whose series the test sets; `error` makes the next reads raise."""

    def __init__(self) -> None:
        self.series: dict[tuple[tuple[str, str], ...], float] = {}
        self.error: Exception | None = None
        self.calls = 0

    def set(self, labels: Mapping[str, str], value: float) -> None:
        self.series[tuple(sorted(labels.items()))] = value

    def drop(self, labels: Mapping[str, str]) -> None:
        del self.series[tuple(sorted(labels.items()))]

    def __call__(self, rule: AlertRule) -> Sequence[Series]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return [(dict(labels), value) for labels, value in self.series.items()]


def kinds(transitions: list[AlertTransition]) -> list[tuple[TransitionKind, str]]:
    return [(t.kind, dict(t.alert.labels).get("version", "")) for t in transitions]


def rule(**overrides: object) -> AlertRule:
    fields: dict[str, object] = {"name": "HighErrorRatio", "signal": "error_ratio", "op": ">", "threshold": 0.05}
    fields.update(overrides)
    return AlertRule(**fields)  # type: ignore[arg-type]


def test_full_lifecycle_pending_firing_resolved_forgotten() -> None:
    r = rule(for_seconds=10, severity="critical", labels={"team": "ml"})
    engine, signal = AlertEngine([r]), Signal()
    signal.set(M1, 0.01)
    assert engine.evaluate(signal, 100.0) == [] and engine.states() == {}

    signal.set(M1, 0.2)
    assert engine.evaluate(signal, 105.0) == []
    [pending] = engine.pending()
    assert pending.state is AlertState.PENDING and pending.active_since == 105.0 and pending.fired_at is None
    assert engine.firing() == []

    signal.set(M1, 0.3)
    assert engine.evaluate(signal, 114.99) == []
    assert engine.pending()[0].value == 0.3

    [fired] = engine.evaluate(signal, 115.0)  # exactly for_seconds after the condition became true
    assert fired.kind is TransitionKind.FIRED and fired.at == 115.0
    alert = fired.alert
    assert alert.labels == (("alertname", "HighErrorRatio"), ("model", "m"), ("severity", "critical"),
                            ("team", "ml"), ("version", "1"))
    assert alert.label_dict["severity"] == "critical"
    assert (alert.active_since, alert.fired_at, alert.resolved_at, alert.value) == (105.0, 115.0, None, 0.3)
    assert engine.firing() == [alert] and engine.pending() == []
    assert engine.states() == {("HighErrorRatio", alert.labels): AlertState.FIRING}

    assert engine.evaluate(signal, 120.0) == []  # still firing: no second notification
    assert engine.firing()[0].fired_at == 115.0

    signal.set(M1, 0.04)
    [resolved] = engine.evaluate(signal, 130.0)
    assert resolved.kind is TransitionKind.RESOLVED and resolved.at == 130.0
    assert resolved.alert.state is AlertState.RESOLVED
    assert (resolved.alert.active_since, resolved.alert.fired_at, resolved.alert.resolved_at) == (105.0, 115.0, 130.0)
    assert resolved.alert.value == 0.04
    assert engine.states() == {} and engine.firing() == []
    assert engine.evaluate(signal, 140.0) == []  # resolved is reported once

    signal.set(M1, 0.5)  # a new episode starts from scratch
    assert engine.evaluate(signal, 150.0) == []
    assert engine.pending()[0].active_since == 150.0


def test_zero_for_seconds_fires_on_first_true_evaluation() -> None:
    engine, signal = AlertEngine([rule()]), Signal()
    signal.set(M1, 1.0)
    [fired] = engine.evaluate(signal, 5.0)
    assert fired.kind is TransitionKind.FIRED
    assert (fired.alert.active_since, fired.alert.fired_at) == (5.0, 5.0)


def test_flapping_while_pending_resets_without_notifications() -> None:
    engine, signal = AlertEngine([rule(for_seconds=10)]), Signal()
    signal.set(M1, 1.0)
    assert engine.evaluate(signal, 0.0) == []
    signal.set(M1, 0.0)
    assert engine.evaluate(signal, 5.0) == []  # back to inactive, silently
    assert engine.pending() == [] and engine.states() == {}
    signal.set(M1, 1.0)
    assert engine.evaluate(signal, 8.0) == []
    assert engine.evaluate(signal, 12.0) == []  # 12 s after the first start, only 4 s after the restart
    assert engine.pending()[0].active_since == 8.0
    assert kinds(engine.evaluate(signal, 18.0)) == [(TransitionKind.FIRED, "1")]


def test_a_series_that_disappears_resolves_and_a_pending_one_is_forgotten() -> None:
    engine, signal = AlertEngine([rule(for_seconds=5)]), Signal()
    signal.set(M1, 1.0)
    signal.set(M2, 1.0)
    engine.evaluate(signal, 0.0)
    assert kinds(engine.evaluate(signal, 5.0)) == [(TransitionKind.FIRED, "1"), (TransitionKind.FIRED, "2")]
    signal.drop(M1)
    [resolved] = engine.evaluate(signal, 6.0)
    assert resolved.kind is TransitionKind.RESOLVED and resolved.alert.label_dict["version"] == "1"
    assert resolved.alert.value == 1.0 and resolved.alert.resolved_at == 6.0  # the last value seen
    assert [a.label_dict["version"] for a in engine.firing()] == ["2"]

    signal.set({"model": "m", "version": "3"}, 1.0)
    engine.evaluate(signal, 7.0)
    signal.drop({"model": "m", "version": "3"})
    assert engine.evaluate(signal, 8.0) == []  # pending and gone: no notification
    assert [a.label_dict["version"] for a in engine.firing()] == ["2"] and engine.pending() == []


def test_label_sets_are_independent_and_transitions_are_ordered() -> None:
    rules = [rule(name="B_rule", for_seconds=0), rule(name="A_rule", for_seconds=10)]
    engine, signal = AlertEngine(rules), Signal()
    signal.set(M2, 1.0)
    signal.set(M1, 0.0)
    transitions = engine.evaluate(signal, 0.0)
    assert [(t.alert.rule.name, t.alert.label_dict["version"]) for t in transitions] == [("B_rule", "2")]
    signal.set(M1, 1.0)
    transitions = engine.evaluate(signal, 1.0)
    assert [(t.alert.rule.name, t.alert.label_dict["version"]) for t in transitions] == [("B_rule", "1")]
    transitions = engine.evaluate(signal, 11.0)
    assert [(t.alert.rule.name, t.alert.label_dict["version"]) for t in transitions] == [("A_rule", "1"),
                                                                                          ("A_rule", "2")]
    assert [(a.rule.name, a.label_dict["version"]) for a in engine.firing()] == [
        ("A_rule", "1"), ("A_rule", "2"), ("B_rule", "1"), ("B_rule", "2")]
    a_rule_v1 = engine.firing()[0]
    assert a_rule_v1.active_since == 1.0  # version 2 of A_rule has been active since 0.0
    assert engine.firing()[1].active_since == 0.0


def test_model_filter_and_label_precedence() -> None:
    r = rule(model="m", labels={"version": "override", "team": "ml"})
    engine, signal = AlertEngine([r]), Signal()
    signal.set({"model": "other", "version": "1"}, 1.0)
    signal.set({"model": "m", "version": "1", "alertname": "spoof", "severity": "info"}, 1.0)
    [fired] = engine.evaluate(signal, 0.0)
    assert fired.alert.label_dict == {"alertname": "HighErrorRatio", "severity": "warning", "model": "m",
                                      "version": "override", "team": "ml"}


@pytest.mark.parametrize(("op", "true_for", "false_for"), [
    (">", [2.0, math.inf], [1.0, 0.0, -math.inf]),
    (">=", [1.0, 2.0], [0.999]),
    ("<", [0.5, -math.inf], [1.0, 2.0]),
    ("<=", [1.0, 0.0], [1.001]),
    ("==", [1.0], [1.0000001, 0.0]),
    ("!=", [0.0, 2.0], [1.0]),
])
def test_comparisons(op: str, true_for: list[float], false_for: list[float]) -> None:
    r = rule(op=op, threshold=1)
    assert all(r.holds(v) for v in true_for)
    assert not any(r.holds(v) for v in false_for)
    assert not r.holds(math.nan)  # not even for "!="


def test_nan_never_fires_and_resolves_a_firing_alert() -> None:
    engine, signal = AlertEngine([rule(op="!=", threshold=0)]), Signal()
    signal.set(M1, math.nan)
    assert engine.evaluate(signal, 0.0) == [] and engine.states() == {}
    signal.set(M1, 1.0)
    assert kinds(engine.evaluate(signal, 1.0)) == [(TransitionKind.FIRED, "1")]
    signal.set(M1, math.nan)
    assert kinds(engine.evaluate(signal, 2.0)) == [(TransitionKind.RESOLVED, "1")]


def test_a_read_failure_neither_fires_nor_resolves_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    r = rule(for_seconds=5)
    engine, signal = AlertEngine([r, rule(name="Other")]), Signal()
    signal.set(M1, 1.0)
    engine.evaluate(signal, 0.0)
    engine.evaluate(signal, 5.0)
    assert len(engine.firing()) == 2
    signal.set(M2, 1.0)
    engine.evaluate(signal, 6.0)
    signal.error = RuntimeError("store unavailable")
    signal.series.clear()
    caplog.set_level(logging.INFO, logger="vigil.telemetry.alerts.engine")
    for now in (7.0, 8.0, 20.0, 30.0):
        assert engine.evaluate(signal, now) == []  # neither the firing one resolves nor the pending one fires
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per rule, not once per evaluation
    assert {"HighErrorRatio", "Other"} == {rec.args[0] for rec in warnings}  # type: ignore[index]
    assert all("store unavailable" in rec.getMessage() for rec in warnings)
    assert len(engine.firing()) == 3 and len(engine.pending()) == 1

    signal.error = None
    signal.set(M1, 1.0)
    transitions = engine.evaluate(signal, 31.0)  # M2 is gone now that reads work: its states change
    assert {(t.kind, t.alert.rule.name, t.alert.label_dict["version"]) for t in transitions} == {
        (TransitionKind.RESOLVED, "Other", "2")}
    assert engine.pending() == []
    assert sum("works again" in rec.getMessage() for rec in caplog.records) == 2
    signal.error = RuntimeError("again")
    engine.evaluate(signal, 32.0)
    assert len([rec for rec in caplog.records if rec.levelno == logging.WARNING]) == 4  # a new failure is logged


def test_a_bad_value_from_the_reader_counts_as_a_read_failure(caplog: pytest.LogCaptureFixture) -> None:
    engine = AlertEngine([rule()])
    assert engine.evaluate(lambda r: [(M1, "not a number")], 0.0) == []  # type: ignore[list-item]
    assert engine.states() == {} and "HighErrorRatio" in caplog.text
    engine.evaluate(lambda r: [({"model": "m"}, 1.0), ({"bad-name": "x"}, 1.0)], 1.0)
    assert engine.states() == {}  # label names Alertmanager would reject make the whole read fail


@pytest.mark.parametrize(("overrides", "message"), [
    ({"name": ""}, "name"),
    ({"name": "has space"}, "name"),
    ({"name": "9lives"}, "name"),
    ({"op": "=>"}, "op"),
    ({"severity": "page"}, "severity"),
    ({"for_seconds": -1}, "for_seconds"),
    ({"for_seconds": math.inf}, "for_seconds"),
    ({"threshold": math.nan}, "threshold"),
    ({"threshold": math.inf}, "threshold"),
    ({"threshold": "1"}, "threshold"),
    ({"signal": ""}, "signal"),
    ({"labels": {"bad-name": "x"}}, "label name"),
    ({"labels": {"alertname": "x"}}, "alertname"),
    ({"labels": {"severity": "x"}}, "severity"),
    ({"labels": {"team": 1}}, "labels"),
    ({"params": {"window": 5}}, "params"),
    ({"model": ""}, "model"),
])
def test_rule_validation(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rule(**overrides)


def test_rules_are_hashable_values_and_names_unique() -> None:
    a = rule(labels={"b": "2", "a": "1"}, params={"quantile": "0.99", "window": "5m"}, severity=Severity.CRITICAL)
    b = rule(labels={"a": "1", "b": "2"}, params={"window": "5m", "quantile": "0.99"}, severity="critical")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.params["quantile"] == "0.99" and list(a.labels) == ["a", "b"]
    assert isinstance(a.threshold, float) and a.threshold == 0.05
    with pytest.raises(ValueError, match="duplicate"):
        AlertEngine([a, rule(op="<")])
    with pytest.raises(ValueError, match="AlertRule"):
        AlertEngine(["HighErrorRatio"])  # type: ignore[list-item]


def test_summary_placeholders_are_filled_safely() -> None:
    r = rule(threshold=0.05, summary="{model} v{version}: error ratio {value} > {threshold} {unknown} {value.real} {0}")
    alert = ActiveAlert(r, (("alertname", r.name), ("model", "m"), ("version", "3")), 0.123456789, 0.0, 1.0)
    assert alert.summary == "m v3: error ratio 12.3% > 5.0% {unknown} {value.real} {0}"
    no_labels = ActiveAlert(rule(model="fallback", summary="{model}/{version}"), (), 1.0, 0.0)
    assert no_labels.summary == "fallback/"
    generic = ActiveAlert(rule(), (), 0.25, 0.0)
    assert generic.summary == "error_ratio > 5.0% (value 25.0%)"


def test_values_read_as_people_read_them_and_apart_from_their_threshold() -> None:
    from vigil.telemetry.alerts.rules import format_apart, format_signal
    assert format_signal("accuracy", 0.839) == "83.9%" and format_signal("latency", 0.41235) == "412.35 ms"
    assert format_signal("drift_status", 2) == "drift" and format_signal("drift_status", 0.5) == "possible drift"
    assert format_signal("error_budget_burn", 14.44) == "14.4×" and format_signal("queue_depth", 512) == "512"
    assert format_apart("accuracy", 0.8996, 0.9) == ("89.96%", "90.00%")  # not "90.0%" beside "90.0%"
    assert format_apart("error_ratio", 0.25, 0.05) == ("25.0%", "5.0%")
    assert format_apart("accuracy", 0.8999999999999999, 0.9) == ("90.0%", "90.0%")  # equal but for floating point
    rule = AlertRule(name="Low", signal="accuracy", op="<", threshold=0.9, summary="accuracy {value} < {threshold}")
    assert rule.summarize({}, 0.8996, ()) == "accuracy 89.96% < 90.00%"
