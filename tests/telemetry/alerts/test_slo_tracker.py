"""SLO tracking on a controllable clock: burn rates and budgets exact on scripted traffic, and the signals the
alert rules read from it."""

from __future__ import annotations

import pytest

from vigil.telemetry.alerts.slo import Objective, SLOTracker
from vigil.telemetry.alerts.watched_values import ServingState, SignalReader, parse_duration, rule_window
from vigil.telemetry.metrics.aggregates import Aggregates, Counter, Histogram
from vigil.telemetry.stream.frames import quantile

BOUNDS = (0.01, 0.1, 0.25, 1.0)
DAY = 86400.0


def instruments() -> tuple[Counter, Histogram, Aggregates]:
    requests = Counter("vigil.requests", "{request}", "", ("model", "version", "method", "code"))
    duration = Histogram("vigil.request.duration", "s", "", BOUNDS, ("model", "version", "method"))
    return requests, duration, Aggregates([requests, duration])


def calls(requests: Counter, duration: Histogram, n: int, code: str = "OK", seconds: float = 0.005,
          model: str = "m") -> None:
    requests.add((model, "1", "Predict", code), n)
    for _ in range(n):
        duration.record(seconds, (model, "1", "Predict"))


def tracker() -> SLOTracker:
    return SLOTracker([Objective("availability", "availability", 0.999, 30 * DAY),
                       Objective("latency", "latency", 0.99, 30 * DAY, latency_seconds=0.25)], BOUNDS)


def test_burn_rates_and_budget_are_exact_on_scripted_traffic() -> None:
    requests, duration, aggregates = instruments()
    slo = tracker()
    t = 1_000_000 * 60.0  # on a minute boundary
    slo.observe(aggregates.read(), t)  # the first reading only sets the starting totals
    for minute in range(10):  # 100 calls a minute; minute 3 has 5 UNAVAILABLE and 20 INVALID_ARGUMENT
        calls(requests, duration, 100 if minute != 3 else 75)
        if minute == 3:
            calls(requests, duration, 5, code="UNAVAILABLE")
            calls(requests, duration, 20, code="INVALID_ARGUMENT")  # the caller's mistake: not the server's fault
        slo.observe(aggregates.read(), t + 60 * minute + 30)
    # 1000 calls, 5 bad: 0.5% bad against an allowed 0.1% → burning 5x over a window holding all ten minutes
    assert slo.burn_rate("availability", "m", 3600) == pytest.approx(5.0)
    assert slo.budget_remaining("availability", "m") == pytest.approx(1 - 5.0)
    # the last five minutes (5..9) hold no failure
    assert slo.burn_rate("availability", "m", 300) == pytest.approx(0.0)
    # ten quiet minutes later neither window has calls
    slo.observe(aggregates.read(), t + 60 * 20 + 30)
    assert slo.burn_rate("availability", "m", 300) is None
    assert slo.burn_rate("availability", "m", 3600) == pytest.approx(5.0)


def test_latency_objective_counts_calls_within_the_bound_from_buckets() -> None:
    requests, duration, aggregates = instruments()
    slo = tracker()
    slo.observe(aggregates.read(), 0.0)
    calls(requests, duration, 97, seconds=0.2)  # within 0.25 s
    calls(requests, duration, 3, seconds=0.5)   # too slow
    slo.observe(aggregates.read(), 30.0)
    # 3% slow against an allowed 1%
    assert slo.burn_rate("latency", "m", 300) == pytest.approx(3.0)
    readings = slo.readings()
    assert ({"slo": "latency"}, 0.99) in readings["objective"]
    assert ({"slo": "latency", "model": "m", "window": "5m"}, pytest.approx(3.0)) in readings["burn"]
    assert ({"slo": "availability", "model": "m"}, pytest.approx(1.0)) in readings["remaining"]


def test_models_are_separate_and_a_bound_must_be_a_histogram_bound() -> None:
    requests, duration, aggregates = instruments()
    slo = tracker()
    slo.observe(aggregates.read(), 0.0)
    calls(requests, duration, 10, code="INTERNAL", model="a")
    calls(requests, duration, 10, model="b")
    slo.observe(aggregates.read(), 10.0)
    assert slo.burn_rate("availability", "a", 300) == pytest.approx(1000.0)
    assert slo.burn_rate("availability", "b", 300) == 0.0
    with pytest.raises(ValueError, match=r"0.3 is not a bound of the request-duration histogram \(0.01, 0.1"):
        SLOTracker([Objective("x", "latency", 0.99, DAY, latency_seconds=0.3)], BOUNDS)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Objective("x", "availability", 1.0, DAY)


def reader(aggregates: Aggregates, slo: SLOTracker | None = None) -> SignalReader:
    serving = [ServingState("m", "1", True, 7), ServingState("n", "2", False, 0)]
    return SignalReader(aggregates, serving=lambda: serving, quality=None, slo=slo, history_seconds=3600)


def test_signals_read_windows_from_the_history() -> None:
    requests, duration, aggregates = instruments()
    signals = reader(aggregates)
    calls(requests, duration, 10, code="INTERNAL")  # before the window
    signals.observe(0.0)
    calls(requests, duration, 8, seconds=0.05)
    calls(requests, duration, 2, code="UNAVAILABLE", seconds=0.5)
    signals.observe(400.0)  # the 5m window starts from the reading at 0
    [(labels, ratio)] = signals.read("error_ratio", {"window": "5m"}, None)
    assert labels == {"model": "m", "version": "1"} and ratio == pytest.approx(0.2)
    [(_, p90)] = signals.read("latency", {"quantile": "0.9", "window": "5m"}, None)
    assert p90 == pytest.approx(quantile(0.9, BOUNDS, [0, 8, 0, 2, 0]))
    assert signals.read("queue_depth", {}, "m") == [({"model": "m", "version": "1"}, 7.0)]
    assert signals.read("model_ready", {}, None)[1] == ({"model": "n", "version": "2"}, 0.0)
    assert signals.read("error_ratio", {"window": "5m"}, "other") == []


def test_error_budget_burn_is_the_lowest_over_its_windows() -> None:
    requests, duration, aggregates = instruments()
    slo = tracker()
    signals = reader(aggregates, slo)
    t = 60.0 * 1000
    slo.observe(signals.observe(t), t)
    calls(requests, duration, 90)
    calls(requests, duration, 10, code="UNAVAILABLE")
    slo.observe(signals.observe(t + 30), t + 30)  # 10% bad: burning 100x in both windows
    [(labels, burn)] = signals.read("error_budget_burn", {"slo": "availability", "windows": "1h,5m"}, None)
    assert labels == {"model": "m"} and burn == pytest.approx(100.0)
    calls(requests, duration, 100)
    slo.observe(signals.observe(t + 60 * 10 + 30), t + 60 * 10 + 30)  # the 5m window holds only good calls
    [(_, burn)] = signals.read("error_budget_burn", {"slo": "availability", "windows": "1h,5m"}, None)
    assert burn == pytest.approx(0.0)  # min(50x over 1h, 0x over 5m)


def test_rule_parameters_are_checked() -> None:
    assert parse_duration("90s") == 90 and parse_duration("1.5h") == 5400
    assert rule_window("latency", {"window": "10m"}) == 600 and rule_window("queue_depth", {}) == 0
    for signal, params, message in [("latency", {"quantile": "1.5"}, "quantile"), ("latency", {"stage": "x"}, "stage"),
                                    ("error_ratio", {"window": "5 minutes"}, "not a duration"),
                                    ("drift_status", {"test": "t"}, "test must be"),
                                    ("accuracy", {"window": "month"}, "count, time, hour, day, week")]:
        with pytest.raises(ValueError, match=message):
            rule_window(signal, params)
