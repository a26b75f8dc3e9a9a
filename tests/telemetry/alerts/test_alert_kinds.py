"""Anomaly and trend alert rules: latency spikes against seeded noise (MAD and EWMA bands), warm-up, floors and a
lasting change of level; predictions on a ramp against flat and falling series; `for_seconds`; their settings and
wiring; the alert loop over real aggregates; and a real server whose model is made slow by bigger requests."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.metrics import NoOpMeter

from tests.conftest import running_app
from vigil.clients import AsyncClient
from vigil.server.monitoring import alert_rules
from vigil.server.settings import AlertRuleSettings, AlertSettings
from vigil.telemetry.alerts.detectors import Anomaly, Direction, Method, Trend
from vigil.telemetry.alerts.engine import AlertEngine, AlertTransition, Series, TransitionKind
from vigil.telemetry.alerts.loop import AlertLoop
from vigil.telemetry.alerts.rules import AlertRule, RuleKind
from vigil.telemetry.alerts.watched_values import ServingState, SignalReader
from vigil.telemetry.metrics.instruments import Instruments

START = 1_700_000_000.0
STEP = 5.0
M1 = {"model": "m", "version": "1"}
M2 = {"model": "m", "version": "2"}


class Signal:
    """A reader whose series the test sets."""

    def __init__(self) -> None:
        self.series: dict[tuple[tuple[str, str], ...], float] = {}

    def set(self, labels: Mapping[str, str], value: float) -> None:
        self.series[tuple(sorted(labels.items()))] = value

    def drop(self, labels: Mapping[str, str]) -> None:
        del self.series[tuple(sorted(labels.items()))]

    def __call__(self, rule: AlertRule) -> Sequence[Series]:
        return [(dict(labels), value) for labels, value in self.series.items()]


class Clock:
    """Evaluation times, one STEP apart."""

    def __init__(self) -> None:
        self.now = START

    def tick(self) -> float:
        self.now += STEP
        return self.now


def spike_rule(method: str, for_seconds: float = 0, **anomaly: Any) -> AlertRule:
    return AlertRule(name="LatencySpike", signal="latency", severity="critical", for_seconds=for_seconds,
                     summary="{model} v{version}: p99 {value}, normally {lower}..{upper} around {baseline}",
                     detection=Anomaly(method=Method(method), **anomaly))


def feed(engine: AlertEngine, signal: Signal, clock: Clock, values: Sequence[float],
         labels: Mapping[str, str] = M1) -> list[AlertTransition]:
    transitions: list[AlertTransition] = []
    for value in values:
        signal.set(labels, value)
        transitions += engine.evaluate(signal, clock.tick())
    return transitions


def noise(seed: int, n: int, mean: float = 0.050, sd: float = 0.005) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, sd) for _ in range(n)]


# -- anomaly rules ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["mad", "ewma"])
def test_an_anomaly_rule_fires_on_a_latency_spike_not_on_noise_and_resolves_after_it(method: str) -> None:
    engine, signal, clock = AlertEngine([spike_rule(method)]), Signal(), Clock()
    assert feed(engine, signal, clock, noise(7, 200)) == []  # 200 evaluations of 50 ± 5 ms: quiet
    assert engine.states() == {}

    [fired] = feed(engine, signal, clock, [0.5])
    assert fired.kind is TransitionKind.FIRED and fired.alert.value == 0.5 and fired.at == clock.now
    band = dict(fired.alert.details)
    assert 0.020 < band["lower"] < band["baseline"] < band["upper"] < 0.080
    assert band["baseline"] == pytest.approx(0.050, abs=0.003)
    assert fired.alert.summary.startswith("m v1: p99 500.00 ms, normally ")
    assert fired.alert.label_dict == {"alertname": "LatencySpike", "severity": "critical", **M1}

    # the spike stays out of the baseline: it keeps firing against a band that does not widen
    assert feed(engine, signal, clock, [0.45, 0.55, 0.5]) == []
    [firing] = engine.firing()
    assert firing.value == 0.5 and dict(firing.details)["upper"] == pytest.approx(band["upper"], abs=0.002)

    [resolved] = feed(engine, signal, clock, noise(8, 1))
    assert resolved.kind is TransitionKind.RESOLVED and resolved.alert.value < band["upper"]
    assert feed(engine, signal, clock, noise(9, 50)) == [] and engine.states() == {}


@pytest.mark.parametrize("method", ["mad", "ewma"])
def test_an_anomaly_rule_cannot_fire_during_its_warm_up(method: str) -> None:
    engine, signal, clock = AlertEngine([spike_rule(method, min_points=20)]), Signal(), Clock()
    values = noise(11, 19)
    values[10] = values[15] = 0.5  # spikes among the first 19 values: no band yet to leave
    assert feed(engine, signal, clock, values) == [] and engine.states() == {}
    assert feed(engine, signal, clock, noise(12, 30)) == []
    assert [t.kind for t in feed(engine, signal, clock, [0.5])] == [TransitionKind.FIRED]

    # a series that disappears is forgotten: when it comes back, it warms up again
    signal.drop(M1)
    [resolved] = engine.evaluate(signal, clock.tick())
    assert resolved.kind is TransitionKind.RESOLVED and resolved.alert.value == 0.5
    assert feed(engine, signal, clock, noise(13, 5) + [0.5]) == [] and engine.states() == {}


@pytest.mark.parametrize("method", ["mad", "ewma"])
def test_an_anomaly_rule_honours_for_seconds(method: str) -> None:
    engine, signal, clock = AlertEngine([spike_rule(method, for_seconds=15)]), Signal(), Clock()
    feed(engine, signal, clock, noise(21, 60))
    assert feed(engine, signal, clock, [0.5, 0.5]) == []  # pending 5 s of the 15
    assert feed(engine, signal, clock, noise(22, 1)) == [] and engine.states() == {}  # back to normal: reset

    assert feed(engine, signal, clock, [0.5]) == []
    since = clock.now
    assert feed(engine, signal, clock, [0.5, 0.5]) == [] and len(engine.pending()) == 1
    [fired] = feed(engine, signal, clock, [0.5])
    assert fired.kind is TransitionKind.FIRED and (fired.alert.active_since, fired.at) == (since, since + 15)


def test_direction_picks_the_side_of_the_band_that_fires() -> None:
    above = spike_rule("mad", direction=Direction.ABOVE)
    below = AlertRule(name="Drop", signal="latency", detection=Anomaly(direction=Direction.BELOW))
    engine, signal, clock = AlertEngine([above, below]), Signal(), Clock()
    feed(engine, signal, clock, noise(31, 40))
    [fired] = feed(engine, signal, clock, [0.001])
    assert fired.alert.rule.name == "Drop" and dict(fired.alert.details)["lower"] > 0.001
    assert fired.alert.summary.startswith("latency 1.00 ms is outside its normal band [")  # the generic summary
    [spiked, resolved] = feed(engine, signal, clock, [0.5])  # in rule order
    assert (spiked.kind, spiked.alert.rule.name) == (TransitionKind.FIRED, "LatencySpike")
    assert (resolved.kind, resolved.alert.rule.name) == (TransitionKind.RESOLVED, "Drop")


def test_the_floor_keeps_a_near_constant_series_from_firing_on_noise() -> None:
    floored = AlertRule(name="Floored", signal="queue_depth", detection=Anomaly(min_half_width=0.5))
    bare = AlertRule(name="Bare", signal="queue_depth",
                     detection=Anomaly(min_half_width=0, min_half_width_ratio=0))
    engine, signal, clock = AlertEngine([floored, bare]), Signal(), Clock()
    steady = [10.0 + 1e-6 * (i % 3) for i in range(40)]  # a constant series with tiny noise: a MAD of 1e-6
    feed(engine, signal, clock, steady)
    [fired] = feed(engine, signal, clock, [10.01])  # 0.1% up
    assert fired.alert.rule.name == "Bare"  # without a floor the band is a few millionths wide
    assert [a.rule.name for a in engine.firing()] == ["Bare"]
    relative = AlertEngine([AlertRule(name="Relative", signal="queue_depth", detection=Anomaly())])
    feed(relative, signal, clock, steady + [10.9])  # the default floor: ±10% of the centre
    assert relative.states() == {}
    assert [t.alert.value for t in feed(relative, signal, clock, [11.1])] == [11.1]


@pytest.mark.parametrize("method", ["mad", "ewma"])
def test_a_lasting_change_of_level_becomes_the_new_normal_after_a_window(method: str) -> None:
    engine = AlertEngine([spike_rule(method, window_seconds=300)])
    signal, clock = Signal(), Clock()
    feed(engine, signal, clock, noise(41, 60))
    [fired] = feed(engine, signal, clock, noise(42, 1, mean=0.2))
    shifted_at = clock.now
    transitions = feed(engine, signal, clock, noise(43, 100, mean=0.2, sd=0.01))
    [resolved] = transitions  # nothing else: it fired for about the window, then learnt the new level
    # EWMA: once nothing has entered the band for the 300 s window; MAD: once the window no longer holds the 20
    # values a band needs
    assert resolved.kind is TransitionKind.RESOLVED
    assert resolved.at == shifted_at + (295 if method == "ewma" else 300 - 20 * STEP)
    assert fired.alert.value > 0.15 and engine.states() == {}
    [back] = feed(engine, signal, clock, [0.05])  # against the new level, the old one is the anomaly
    assert back.kind is TransitionKind.FIRED and dict(back.alert.details)["baseline"] == pytest.approx(0.2, abs=0.01)


def test_a_count_window_bounds_the_history() -> None:
    engine, signal, clock = AlertEngine([spike_rule("mad", window_seconds=None, window_points=30)]), Signal(), Clock()
    feed(engine, signal, clock, noise(51, 30, mean=0.050, sd=0.002))
    assert feed(engine, signal, clock, noise(52, 30, mean=0.056, sd=0.002)) == []  # within the band: taken in
    [fired] = feed(engine, signal, clock, [0.5])
    assert dict(fired.alert.details)["baseline"] == pytest.approx(0.056, abs=0.0015)  # the first 30 are gone


# -- trend rules -------------------------------------------------------------------------------------------------

THRESHOLD = 500.0
HORIZON = 120.0


def ramp(engine: AlertEngine, signal: Signal, start: float, per_second: float, seconds: float,
         seed: int | None = None) -> list[AlertTransition]:
    """Evaluate every STEP from START while the value climbs `per_second` from `start` (plus ± noise)."""
    rng = random.Random(seed)
    transitions: list[AlertTransition] = []
    steps = int(seconds // STEP)
    for i in range(1, steps + 1):
        now = START + i * STEP
        signal.set(M1, start + per_second * (now - START) + (rng.gauss(0, 5) if seed is not None else 0.0))
        transitions += engine.evaluate(signal, now)
    return transitions


def trend_rule(**overrides: Any) -> AlertRule:
    fields: dict[str, Any] = dict(name="QueueFillingUp", signal="queue_depth", op=">", threshold=THRESHOLD,
                                  summary="{model} v{version}: {current} queued, {predicted} expected, past "
                                          "{threshold} in {eta}",
                                  detection=Trend(window_seconds=300, horizon_seconds=HORIZON, min_points=10))
    fields.update(overrides)
    return AlertRule(**fields)


@pytest.mark.parametrize("seed", [None, 3])
def test_a_trend_rule_fires_about_a_horizon_before_the_threshold_is_crossed(seed: int | None) -> None:
    full = AlertRule(name="QueueFull", signal="queue_depth", op=">", threshold=THRESHOLD)
    engine, signal = AlertEngine([trend_rule(), full]), Signal()
    transitions = ramp(engine, signal, start=100, per_second=1.0, seconds=600, seed=seed)
    crossing = START + 400  # 100 + 1/s reaches 500 after 400 s
    fired = {t.alert.rule.name: t for t in transitions if t.kind is TransitionKind.FIRED}
    trend, threshold = fired["QueueFillingUp"], fired["QueueFull"]
    assert trend.at < crossing <= threshold.at
    assert crossing - trend.at == pytest.approx(HORIZON, abs=STEP if seed is None else 3 * STEP)
    assert trend.alert.value > THRESHOLD  # the value predicted at the horizon
    details = dict(trend.alert.details)
    assert details["predicted"] == trend.alert.value and details["current"] < THRESHOLD
    assert details["eta"] == pytest.approx(crossing - trend.at, abs=15)
    if seed is None:
        # at 380 the line predicts exactly 500, which is not above 500: the next evaluation fires
        assert trend.alert.summary == "m v1: 385 queued, 505 expected, past 500 in 1m55s"


@pytest.mark.parametrize(("start", "per_second"), [(300.0, 0.0), (450.0, -0.5), (499.0, 0.0)])
def test_a_trend_rule_stays_quiet_on_a_flat_or_falling_series(start: float, per_second: float) -> None:
    engine, signal = AlertEngine([trend_rule()]), Signal()
    assert ramp(engine, signal, start=start, per_second=per_second, seconds=900, seed=5 if start < 499 else None) == []
    assert engine.states() == {}


def test_a_trend_rule_honours_for_seconds_and_needs_its_points() -> None:
    engine, signal = AlertEngine([trend_rule(for_seconds=30)]), Signal()
    transitions = ramp(engine, signal, start=100, per_second=1.0, seconds=600)
    [fired] = [t for t in transitions if t.kind is TransitionKind.FIRED]
    assert fired.at - fired.alert.active_since == 30
    assert START + 400 - fired.at == pytest.approx(HORIZON - 30, abs=STEP)

    steep = AlertEngine([trend_rule(detection=Trend(window_seconds=300, horizon_seconds=HORIZON, min_points=10))])
    signal = Signal()
    for i in range(9):  # already past the threshold by the 9th value, but the fit needs 10
        signal.set(M1, 100.0 * i)
        assert steep.evaluate(signal, START + i * STEP) == []
    signal.set(M1, 900.0)
    [fired] = steep.evaluate(signal, START + 9 * STEP)
    assert dict(fired.alert.details)["eta"] == 0.0 and fired.alert.summary.endswith("past 500 in 0s")


def test_a_falling_accuracy_trend_fires_below_its_threshold() -> None:
    rule = AlertRule(name="AccuracySliding", signal="accuracy", op="<", threshold=0.9,
                     detection=Trend(window_seconds=600, horizon_seconds=600, min_points=5))
    engine, signal = AlertEngine([rule]), Signal()
    transitions = ramp(engine, signal, start=0.99, per_second=-0.0001, seconds=600)  # crosses 0.9 at 900 s
    [fired] = transitions
    assert fired.at == pytest.approx(START + 300, abs=STEP) and fired.alert.value < 0.9
    assert fired.alert.summary.startswith("accuracy trends to 90.0%") and "< 90.0%" in fired.alert.summary


# -- rule and settings validation ------------------------------------------------------------------------------

@pytest.mark.parametrize(("build", "message"), [
    (lambda: AlertRule(name="A", signal="latency", threshold=1, detection=Anomaly()), "takes no threshold"),
    (lambda: AlertRule(name="A", signal="latency", detection=Trend(60, 60)), "threshold must be a finite number"),
    (lambda: AlertRule(name="A", signal="latency", op="==", threshold=1, detection=Trend(60, 60)),
     "trend rule's op must be one of <, <=, >, >="),
    (lambda: AlertRule(name="A", signal="latency", summary="{eta}", detection=Anomaly()),
     r"placeholders \{eta\} do not apply to anomaly rules"),
    (lambda: AlertRule(name="A", signal="latency", threshold=1, summary="{lower}"), "do not apply to threshold"),
    (lambda: AlertRule(name="A", signal="latency", detection="anomaly"), "detection must be"),  # type: ignore[arg-type]
    (lambda: Anomaly(k=0), "anomaly k must be a finite number > 0"),
    (lambda: Anomaly(method="zscore"), "method must be one of mad, ewma"),  # type: ignore[arg-type]
    (lambda: Anomaly(direction="up"), "direction must be one of"),  # type: ignore[arg-type]
    (lambda: Anomaly(window_points=50), "exactly one of window_seconds and window_points"),
    (lambda: Anomaly(window_seconds=None, window_points=10), r"min_points \(20\) must not exceed window_points"),
    (lambda: Anomaly(alpha=1.5), "alpha must be a finite number > 0 and <= 1"),
    (lambda: Anomaly(min_half_width=-1), "min_half_width must be"),
    (lambda: Trend(0, 60), "trend window_seconds must be"),
    (lambda: Trend(60, 60, min_points=1), "trend min_points must be an integer >= 2"),
])
def test_bad_rules_and_parameters_are_refused(build: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_rule_kinds_come_from_settings_with_their_parameters() -> None:
    anomaly = AlertRuleSettings(name="Spiky", signal="latency", kind="anomaly", for_seconds=30, severity="critical",
                                params={"window": "1m"},
                                anomaly={"method": "ewma", "k": 5, "window": 120, "min_points": 30,
                                         "direction": "above", "min_half_width": 0.01, "alpha": 0.2})
    defaults = AlertRuleSettings(name="Plain", signal="queue_depth", kind="anomaly")
    trend = AlertRuleSettings(name="Filling", signal="queue_depth", kind="trend", op=">=", threshold=500,
                              trend={"window": "15m", "horizon": "10m"})
    threshold = AlertRuleSettings(name="Full", signal="queue_depth", threshold=900)
    rules = alert_rules(AlertSettings(rules=[anomaly, defaults, trend, threshold]))
    assert [r.kind for r in rules] == [RuleKind.ANOMALY, RuleKind.ANOMALY, RuleKind.TREND, RuleKind.THRESHOLD]
    assert rules[0].detection == Anomaly(method=Method.EWMA, k=5, window_seconds=None, window_points=120,
                                         min_points=30, direction=Direction.ABOVE, min_half_width=0.01, alpha=0.2)
    assert (rules[0].threshold, rules[0].for_seconds, dict(rules[0].params)) == (None, 30, {"window": "1m"})
    assert rules[1].detection == Anomaly()  # the settings' defaults are the engine's: 10m, k 4, both sides
    assert rules[2].detection == Trend(window_seconds=900, horizon_seconds=600, min_points=10)
    assert (rules[2].op, rules[2].threshold) == (">=", 500) and rules[3].detection is None
    AlertEngine(rules)
    # a dump validates again, and a threshold rule dumps as it always did
    for rule in (anomaly, defaults, trend, threshold):
        assert AlertRuleSettings.model_validate(rule.model_dump()) == rule
    assert "kind" not in threshold.model_dump() and "threshold" not in defaults.model_dump()


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "anomaly", "threshold": 1}, "alert rule R: an anomaly rule .* takes no threshold"),
    ({"kind": "anomaly", "op": "<"}, "alert rule R: an anomaly rule takes no op"),
    ({"kind": "anomaly", "anomaly": {"k": 0}}, r"alert rule R: anomaly.k: Input should be greater than 0"),
    ({"kind": "anomaly", "anomaly": {"window": "10 minutes"}}, "alert rule R: anomaly.window: '10 minutes' is not"),
    ({"kind": "anomaly", "anomaly": {"window": 10}}, r"alert rule R: anomaly.min_points \(20\) exceeds the 10-point"),
    ({"kind": "anomaly", "anomaly": {"direction": "up"}}, "alert rule R: anomaly.direction: Input should be"),
    ({"kind": "trend", "threshold": 1}, "alert rule R: a trend rule needs `trend` settings"),
    ({"kind": "trend", "trend": {"window": "5m", "horizon": "5m"}}, "alert rule R: a trend rule needs a threshold"),
    ({"kind": "trend", "threshold": 1, "op": "!=", "trend": {"window": "5m", "horizon": "5m"}},
     "alert rule R: a trend rule's op must be"),
    ({"kind": "trend", "threshold": 1, "trend": {"window": "5m"}}, "alert rule R: trend.horizon: Field required"),
    ({"threshold": 1, "anomaly": {}}, 'alert rule R: `anomaly` settings apply to kind = "anomaly" rules only'),
    ({}, "alert rule R: a threshold rule needs a threshold"),
    ({"kind": "forecast", "threshold": 1}, "alert rule R: kind: Input should be 'threshold', 'anomaly' or 'trend'"),
])
def test_rule_kind_settings_are_checked_and_errors_name_the_rule(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlertSettings(rules=[{"name": "R", "signal": "latency", **fields}])


def test_too_short_a_window_for_the_schedule_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    rule = AlertRuleSettings(name="Sparse", signal="queue_depth", kind="trend", threshold=1,
                             trend={"window": "1m", "horizon": "5m"})
    alert_rules(AlertSettings(rules=[rule], interval_seconds=30))
    assert "alert rule Sparse: its 60s window holds about 2 evaluations (every 30s), fewer than the 10" in caplog.text


# -- the alert loop over real aggregates, and a real server ----------------------------------------------------

def test_the_alert_loop_drives_both_kinds_over_real_aggregates() -> None:
    instruments = Instruments(NoOpMeter("test"))
    depth = [0]
    settings = AlertSettings(interval_seconds=STEP, rules=[
        AlertRuleSettings(name="LatencySpike", signal="latency", kind="anomaly",
                          params={"quantile": "0.99", "window": "5s"}, anomaly={"method": "ewma", "window": "10m"},
                          summary="{model} v{version}: p99 {value}, normally up to {upper}"),
        AlertRuleSettings(name="QueueFillingUp", signal="queue_depth", kind="trend", threshold=500,
                          trend={"window": "5m", "horizon": "2m"},
                          summary="{model} v{version}: {current} queued, past {threshold} in {eta}")])
    signals = SignalReader(instruments.aggregates, serving=lambda: [ServingState("m", "1", True, depth[0])],
                           quality=None, slo=None, history_seconds=STEP * 2)
    loop = AlertLoop(AlertEngine(alert_rules(settings)), signals, None)
    rng = random.Random(61)

    def evaluate(i: int, *latencies: float) -> list[AlertTransition]:
        for latency in latencies:
            instruments.request_duration.record(latency, ("m", "1", "Predict"))
        depth[0] = 10 * i  # ten more queued requests every 5 s: past 500 at i = 51
        return loop.evaluate(now=START + i * STEP)

    transitions = [t for i in range(80) for t in evaluate(i, *(rng.gauss(0.05, 0.005) for _ in range(20)))]
    [filling] = transitions  # the queue's trend; the latency stays in its band
    assert filling.alert.rule.name == "QueueFillingUp" and filling.alert.value > 500
    assert filling.at == START + (51 - 24) * STEP  # the 2m horizon is 24 evaluations ahead of the crossing
    assert filling.alert.summary == "m v1: 270 queued, past 500 in 1m55s"
    [spike] = evaluate(80, *([0.05] * 15 + [0.4] * 5))
    assert spike.alert.rule.name == "LatencySpike" and spike.alert.value > 0.25
    assert spike.alert.label_dict == {"alertname": "LatencySpike", "severity": "warning", **M1}
    upper = dict(spike.alert.details)["upper"]
    assert 0.05 < upper < 0.15 and spike.alert.summary == f"m v1: p99 {1000 * spike.alert.value:.2f} ms, " \
                                                          f"normally up to {1000 * upper:.2f} ms"
    [resolved] = evaluate(81, *(rng.gauss(0.05, 0.005) for _ in range(20)))
    assert resolved.kind is TransitionKind.RESOLVED and resolved.alert.rule.name == "LatencySpike"
    assert [a.rule.name for a in loop.firing()] == ["QueueFillingUp"]


async def test_a_real_server_fires_a_latency_anomaly_when_its_model_turns_slow(model_repo: Path) -> None:
    """The slow model's cost grows with rows: 1-row calls are the normal, bursts of 1000-row calls the spike."""
    rule = AlertRuleSettings(name="SlowModelSpike", signal="latency", kind="anomaly", model="slow", for_seconds=10,
                             params={"quantile": "0.99", "window": "5s"}, severity="critical",
                             anomaly={"direction": "above", "min_points": 10,
                                      "min_half_width": 0.01},
                             summary="{model} v{version}: p99 {value}, above {upper}")
    small, big = np.ones((1, 256), np.float32), np.ones((1000, 256), np.float32)
    async with running_app(model_repo, alerts=AlertSettings(rules=[rule], interval_seconds=3600)) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        assert app.monitoring is not None and app.monitoring.alerts is not None
        loop = app.monitoring.alerts
        t0 = time.time()
        loop.evaluate(now=t0)
        for i in range(1, 16):
            for _ in range(3):
                await client.predict("slow", small)
            assert loop.evaluate(now=t0 + i * STEP) == []
        fired: list[AlertTransition] = []
        for i in range(16, 19):  # three evaluations in a row over the band: the 10 s of for_seconds
            await asyncio.gather(*(client.predict("slow", big) for _ in range(4)))
            fired += loop.evaluate(now=t0 + i * STEP)
        [transition] = fired
        assert transition.kind is TransitionKind.FIRED and transition.at == t0 + 18 * STEP
        alert = transition.alert
        assert alert.label_dict == {"alertname": "SlowModelSpike", "severity": "critical", "model": "slow",
                                    "version": "1"}
        upper = dict(alert.details)["upper"]
        assert alert.value > upper and not math.isnan(upper)
        [state] = app.monitoring.alert_states()
        assert state.summary == f"slow v1: p99 {1000 * alert.value:.2f} ms, above {1000 * upper:.2f} ms"
