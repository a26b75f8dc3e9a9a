"""SLOTracker on a clock the test sets: burn rates and budgets exact on scripted traffic recorded into real
aggregates, which calls spend the budget, how windows and the period forget minutes, latency objectives counted
from histogram buckets, per-model separation and the gauge readings."""

from __future__ import annotations

import re
import time

import pytest

from vigil.telemetry.alerts.slo import BURN_WINDOWS, SERVER_FAULTS, Objective, SLOTracker
from vigil.telemetry.metrics.aggregates import Aggregates, Counter, Histogram, HistogramSeries, Reading

BOUNDS = (0.005, 0.01, 0.1, 0.25, 1.0)
DAY = 86400.0
T0 = 28_333_334 * 60.0  # 2023-11-14T22:14:00Z, on a minute boundary


class Traffic:
    """The request counter and duration histogram the server records into, and a tracker fed from them."""

    def __init__(self, *objectives: Objective) -> None:
        self.requests = Counter("vigil.requests", "{request}", "calls", ("model", "version", "method", "code"))
        self.duration = Histogram("vigil.request.duration", "s", "duration", BOUNDS, ("model", "version", "method"))
        self.aggregates = Aggregates([self.requests, self.duration])
        self.slo = SLOTracker(objectives or (availability(),), BOUNDS)

    def calls(self, n: int, code: str = "OK", *, model: str = "m", version: str = "1", method: str = "Predict",
              seconds: float = 0.002) -> None:
        self.requests.add((model, version, method, code), n)
        for _ in range(n):
            self.duration.record(seconds, (model, version, method))

    def observe(self, now: float) -> None:
        self.slo.observe(self.aggregates.read(), now)

    def at_minute(self, minute: int) -> None:
        """Observe half-way through minute `minute` after T0."""
        self.observe(T0 + 60 * minute + 30)


def availability(objective: float = 0.999, period: float = 30 * DAY) -> Objective:
    return Objective("availability", "availability", objective, period)


def latency(bound: float = 0.25, objective: float = 0.99) -> Objective:
    return Objective("latency", "latency", objective, 30 * DAY, latency_seconds=bound)


# Ten minutes of 100 calls each: 5 of the 1000 failed by the server (3 in minute 2, 2 in minute 7), and 10 a
# minute refused because of the caller (INVALID_ARGUMENT, NOT_FOUND), which must not spend the budget.
SCRIPT = {minute: {"OK": 90 - (3 if minute == 2 else 2 if minute == 7 else 0), "INVALID_ARGUMENT": 6,
                   "NOT_FOUND": 4, **({"UNAVAILABLE": 3} if minute == 2 else {}),
                   **({"INTERNAL": 2} if minute == 7 else {})} for minute in range(10)}


def expected_burn(now_minute: int, window_minutes: int, objective: float = 0.999) -> float | None:
    """The burn rate over the window ending with `now_minute`, straight from SCRIPT."""
    minutes = [SCRIPT.get(m, {}) for m in range(now_minute - window_minutes + 1, now_minute + 1)]
    total = sum(n for codes in minutes for n in codes.values())
    bad = sum(n for codes in minutes for code, n in codes.items() if code in SERVER_FAULTS)
    return None if total == 0 else bad / total / (1 - objective)


def play_script(traffic: Traffic) -> None:
    traffic.calls(7, "INTERNAL")  # before the first reading: they have no minute, so no window holds them
    traffic.observe(T0)
    for minute, codes in SCRIPT.items():
        for code, n in codes.items():
            traffic.calls(n, code)
        traffic.at_minute(minute)


def test_the_script_adds_up() -> None:
    assert sum(n for codes in SCRIPT.values() for n in codes.values()) == 1000
    assert sum(n for codes in SCRIPT.values() for c, n in codes.items() if c in SERVER_FAULTS) == 5


def test_burn_rate_and_budget_are_exact_on_scripted_traffic() -> None:
    traffic = Traffic()
    traffic.calls(7, "INTERNAL")
    traffic.observe(T0)
    for minute, codes in SCRIPT.items():
        for code, n in codes.items():
            traffic.calls(n, code)
        traffic.at_minute(minute)
        for window, seconds in BURN_WINDOWS.items():  # every window, after every minute
            expected = expected_burn(minute, int(seconds // 60))
            assert expected is not None
            assert traffic.slo.burn_rate("availability", "m", seconds) == pytest.approx(expected, rel=1e-12), \
                (minute, window)
    # 5 bad in 1000 is 0.5% against the 0.1% allowed: 5x over any window holding all ten minutes
    assert traffic.slo.burn_rate("availability", "m", 3600) == pytest.approx(5.0, rel=1e-12)
    assert traffic.slo.burn_rate("availability", "m", 600) == pytest.approx(5.0, rel=1e-12)
    # minutes 5..9 hold 500 calls and the 2 INTERNAL ones
    assert traffic.slo.burn_rate("availability", "m", 300) == pytest.approx(4.0, rel=1e-12)
    # the period's budget is overspent four times over
    assert traffic.slo.budget_remaining("availability", "m") == pytest.approx(-4.0, rel=1e-12)
    assert traffic.slo.models("availability") == ["m"]


def test_a_budget_partly_spent() -> None:
    traffic = Traffic(availability(objective=0.99))
    traffic.observe(T0)
    traffic.calls(1990)
    traffic.calls(5, "UNAVAILABLE")
    traffic.calls(5, "DEADLINE_EXCEEDED")
    traffic.at_minute(0)
    # 10 of 2000 bad (0.5%) against 1% allowed: half the budget spent
    assert traffic.slo.burn_rate("availability", "m", 300) == pytest.approx(0.5)
    assert traffic.slo.budget_remaining("availability", "m") == pytest.approx(0.5)


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE"])
def test_callers_mistakes_do_not_spend_the_budget(code: str) -> None:
    traffic = Traffic()
    traffic.observe(T0)
    traffic.calls(500)
    traffic.calls(500, code)
    traffic.at_minute(0)
    assert traffic.slo.burn_rate("availability", "m", 300) == 0.0
    assert traffic.slo.budget_remaining("availability", "m") == 1.0


@pytest.mark.parametrize("code", sorted(SERVER_FAULTS))
def test_server_faults_spend_the_budget(code: str) -> None:
    traffic = Traffic()
    traffic.observe(T0)
    traffic.calls(990)
    traffic.calls(10, code)
    traffic.at_minute(0)
    assert traffic.slo.burn_rate("availability", "m", 300) == pytest.approx(10.0)


def test_the_prometheus_rules_count_no_fault_the_server_does_not() -> None:
    """The Prometheus recording rules' availability errors are server faults here too."""
    from tests.deploy.test_rules import RULES

    codes = set(re.findall(r'code=~"([A-Z_|]+)"', RULES.read_text(encoding="utf-8")))
    assert codes, "no availability error selector in the Prometheus rules"
    for alternatives in codes:
        assert set(alternatives.split("|")) <= SERVER_FAULTS


def test_windows_drop_the_minutes_that_left_them() -> None:
    traffic = Traffic()
    play_script(traffic)
    slo = traffic.slo
    traffic.at_minute(19)  # ten quiet minutes later
    assert slo.burn_rate("availability", "m", 300) is None  # no calls in minutes 15..19: no rate at all
    assert slo.burn_rate("availability", "m", 1800) == pytest.approx(5.0)  # minutes -10..19 hold all of them
    assert slo.burn_rate("availability", "m", 3600) == pytest.approx(5.0)
    traffic.at_minute(34)  # 30m window: minutes 5..34, which hold 500 calls and minute 7's 2 INTERNAL
    assert slo.burn_rate("availability", "m", 1800) == pytest.approx(4.0)
    traffic.at_minute(37)  # minutes 8..37: 200 good calls
    assert slo.burn_rate("availability", "m", 1800) == 0.0
    traffic.at_minute(40)  # minutes 11..40
    assert slo.burn_rate("availability", "m", 1800) is None
    assert slo.burn_rate("availability", "m", 3600) == pytest.approx(5.0)
    traffic.at_minute(69)  # 1h window: minutes 10..69
    assert slo.burn_rate("availability", "m", 3600) is None
    assert slo.burn_rate("availability", "m", 21600) == pytest.approx(5.0)
    assert slo.budget_remaining("availability", "m") == pytest.approx(-4.0)  # still within the 30-day period
    assert slo.models("availability") == ["m"]  # a model without recent calls is still tracked


def test_a_window_is_whole_minutes_ending_with_the_current_one() -> None:
    traffic = Traffic()
    traffic.observe(T0)
    traffic.calls(10, "INTERNAL")
    traffic.observe(T0 + 59.9)  # minute 0
    traffic.calls(90)
    traffic.observe(T0 + 60.0)  # minute 1
    assert traffic.slo.burn_rate("availability", "m", 60) == pytest.approx(0.0)  # minute 1 only
    assert traffic.slo.burn_rate("availability", "m", 61) == pytest.approx(100.0)  # rounds up to 2 minutes
    assert traffic.slo.burn_rate("availability", "m", 1) == pytest.approx(0.0)  # at least the current minute
    traffic.observe(T0 + 4 * 60 + 59)  # minute 4: a 5m window still reaches minute 0
    assert traffic.slo.burn_rate("availability", "m", 300) == pytest.approx(100.0)
    traffic.observe(T0 + 5 * 60)  # minute 5: it no longer does
    assert traffic.slo.burn_rate("availability", "m", 300) == pytest.approx(0.0)


def test_the_period_forgets_minutes_older_than_it() -> None:
    traffic = Traffic(availability(period=600))  # a ten-minute period: ten buckets, reused in a ring
    slo = traffic.slo
    traffic.observe(T0)
    traffic.calls(100, "UNAVAILABLE")
    traffic.at_minute(2)
    traffic.calls(100)
    traffic.at_minute(5)
    assert slo.budget_remaining("availability", "m") == pytest.approx(1 - 0.5 / 0.001)
    # a window longer than the period sees the period only
    assert slo.burn_rate("availability", "m", 3600) == slo.burn_rate("availability", "m", 600)
    traffic.calls(100)
    traffic.at_minute(12)  # minute 12 reuses minute 2's bucket: the failures must be gone, not added to
    assert slo.burn_rate("availability", "m", 60) == 0.0
    assert slo.budget_remaining("availability", "m") == pytest.approx(1.0)  # minutes 3..12: 200 good calls
    traffic.at_minute(25)  # nothing left in the period
    assert slo.budget_remaining("availability", "m") is None
    traffic.calls(4)
    traffic.calls(1, "INTERNAL")
    traffic.at_minute(26)
    assert slo.budget_remaining("availability", "m") == pytest.approx(1 - 0.2 / 0.001)


def test_a_clock_jump_longer_than_the_period_clears_every_minute_quickly() -> None:
    traffic = Traffic()
    traffic.observe(0.0)
    traffic.calls(10, "INTERNAL")
    traffic.observe(30.0)
    assert traffic.slo.budget_remaining("availability", "m") == pytest.approx(1 - 1000.0)
    started = time.perf_counter()
    traffic.observe(T0)  # the wall clock set 53 years forward (an unset clock corrected by NTP)
    assert time.perf_counter() - started < 0.5
    assert traffic.slo.budget_remaining("availability", "m") is None
    traffic.calls(1000)
    traffic.observe(T0 + 30)
    assert traffic.slo.budget_remaining("availability", "m") == 1.0


def test_only_calls_after_the_first_reading_count_and_late_models_count_from_zero() -> None:
    traffic = Traffic()
    traffic.calls(50, "INTERNAL", model="early")
    traffic.observe(T0)  # "early" had calls before: they are the starting totals, not spending
    assert traffic.slo.burn_rate("availability", "early", 300) is None
    traffic.calls(50, model="early")
    traffic.calls(3, "UNAVAILABLE", model="late")  # a model first seen after the first reading: all of its calls
    traffic.calls(97, model="late")
    traffic.at_minute(0)
    assert traffic.slo.burn_rate("availability", "early", 300) == 0.0
    assert traffic.slo.burn_rate("availability", "late", 300) == pytest.approx(30.0)
    assert traffic.slo.models("availability") == ["early", "late"]


def test_totals_that_go_down_add_nothing() -> None:
    slo = SLOTracker([availability()], BOUNDS)

    def reading(ok: int, bad: int) -> Reading:
        counts: dict[tuple[str, ...], int] = {("m", "1", "Predict", "OK"): ok, ("m", "1", "Predict", "INTERNAL"): bad}
        return {"vigil.requests": counts}

    slo.observe(reading(100, 10), T0)
    slo.observe(reading(190, 10), T0 + 10)  # 90 good
    slo.observe(reading(5, 1), T0 + 20)  # a restarted counter: no negative calls
    assert slo.burn_rate("availability", "m", 300) == pytest.approx(0.0)
    slo.observe(reading(14, 2), T0 + 30)  # 9 good and 1 bad since the restart
    assert slo.burn_rate("availability", "m", 300) == pytest.approx(1 / 100 / 0.001)


def test_a_model_missing_from_later_readings_keeps_its_minutes_where_they_were() -> None:
    """Ring buckets not updated since are not read as if they were recent ones."""
    slo = SLOTracker([availability(period=600)], BOUNDS)

    def reading(**totals: tuple[int, int]) -> Reading:
        counts: dict[tuple[str, ...], int] = {(model, "1", "Predict", code): n for model, (ok, bad) in totals.items()
                                              for code, n in (("OK", ok), ("INTERNAL", bad))}
        return {"vigil.requests": counts}

    slo.observe(reading(), T0)
    slo.observe(reading(a=(0, 10), b=(10, 0)), T0 + 30)  # minute 0
    slo.observe(reading(b=(20, 0)), T0 + 12 * 60 + 30)  # minute 12: "a" is no longer in the readings
    assert slo.burn_rate("availability", "a", 300) is None  # minute 0's slot is minute 10's, not minute 12's
    assert slo.budget_remaining("availability", "a") is None
    assert slo.burn_rate("availability", "b", 60) == 0.0


def test_latency_counts_calls_within_the_bound_from_the_buckets() -> None:
    traffic = Traffic(latency(bound=0.25, objective=0.99))
    traffic.observe(T0)
    traffic.calls(150, seconds=0.003)
    traffic.calls(40, seconds=0.25)  # on the bound: within it (bounds are inclusive)
    traffic.calls(6, seconds=0.2, method="BatchPredict", version="2")  # every method and version of the model
    traffic.calls(3, seconds=0.2500001)  # just over
    traffic.calls(1, seconds=30.0)  # beyond the last bound
    traffic.at_minute(0)
    # 4 of 200 too slow: 2% against 1% allowed
    assert traffic.slo.burn_rate("latency", "m", 300) == pytest.approx(2.0, rel=1e-12)
    assert traffic.slo.budget_remaining("latency", "m") == pytest.approx(-1.0, rel=1e-12)
    traffic.calls(200, seconds=0.01)
    traffic.at_minute(1)
    assert traffic.slo.burn_rate("latency", "m", 60) == 0.0
    assert traffic.slo.burn_rate("latency", "m", 120) == pytest.approx(1.0, rel=1e-12)


def test_latency_and_availability_are_separate_objectives_of_the_same_calls() -> None:
    traffic = Traffic(availability(), latency(bound=0.01, objective=0.9))
    traffic.observe(T0)
    traffic.calls(80, seconds=0.001)
    traffic.calls(20, "INTERNAL", seconds=0.5)  # slow and failed: spends both budgets
    traffic.at_minute(0)
    assert traffic.slo.burn_rate("availability", "m", 300) == pytest.approx(200.0)
    assert traffic.slo.burn_rate("latency", "m", 300) == pytest.approx(2.0)


def test_the_latency_bound_must_be_a_histogram_bound() -> None:
    with pytest.raises(ValueError, match=re.escape(
            "SLO latency: latency_seconds=0.3 is not a bound of the request-duration histogram "
            "(0.005, 0.01, 0.1, 0.25, 1)")):
        SLOTracker([availability(), latency(bound=0.3)], BOUNDS)
    SLOTracker([latency(bound=0.25 + 1e-12)], BOUNDS)  # the same bound up to rounding is accepted


@pytest.mark.parametrize(("args", "message"), [
    (("x", "throughput", 0.9, DAY, None), "kind must be availability or latency"),
    (("x", "availability", 1.0, DAY, None), "strictly between 0 and 1"),
    (("x", "availability", 0.0, DAY, None), "strictly between 0 and 1"),
    (("x", "latency", 0.99, DAY, None), "latency_seconds goes with latency objectives"),
    (("x", "availability", 0.99, DAY, 0.25), "latency_seconds goes with latency objectives"),
])
def test_objectives_are_checked(args: tuple[str, str, float, float, float | None], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Objective(*args)


def test_models_are_tracked_separately_and_versions_together() -> None:
    traffic = Traffic(availability(), latency())
    traffic.observe(T0)
    traffic.calls(100, "INTERNAL", model="a", version="1")
    traffic.calls(100, model="a", version="2")
    traffic.calls(1000, model="b")
    traffic.calls(50, "UNAVAILABLE", model="")  # calls naming no model belong to no model's objective
    traffic.at_minute(0)
    assert traffic.slo.models("availability") == traffic.slo.models("latency") == ["a", "b"]
    assert traffic.slo.burn_rate("availability", "a", 300) == pytest.approx(500.0)
    assert traffic.slo.burn_rate("availability", "b", 300) == 0.0
    assert traffic.slo.burn_rate("availability", "c", 300) is None
    assert traffic.slo.budget_remaining("availability", "") is None


def test_readings_are_labelled_by_slo_model_and_window() -> None:
    traffic = Traffic(availability(), latency(bound=0.1, objective=0.95))
    traffic.observe(T0)
    traffic.calls(98, model="a", seconds=0.05)
    traffic.calls(2, "UNAVAILABLE", model="a", seconds=0.5)
    traffic.at_minute(0)
    traffic.calls(100, model="b", seconds=0.05)
    traffic.at_minute(20)  # a's calls have left the 5m window, b's are in it
    readings = traffic.slo.readings()
    assert set(readings) == {"objective", "remaining", "burn"}
    assert readings["objective"] == [({"slo": "availability"}, 0.999), ({"slo": "latency"}, 0.95)]
    remaining = {(labels["slo"], labels["model"]): value for labels, value in readings["remaining"]}
    assert remaining == {("availability", "a"): pytest.approx(1 - 20.0), ("availability", "b"): 1.0,
                         ("latency", "a"): pytest.approx(1 - 0.4), ("latency", "b"): 1.0}
    burn = {(labels["slo"], labels["model"], labels["window"]): value for labels, value in readings["burn"]}
    assert all(set(labels) == {"slo", "model", "window"} for labels, _ in readings["burn"])
    assert burn == {
        **{("availability", "a", w): pytest.approx(20.0) for w in ("30m", "1h", "6h")},
        **{("latency", "a", w): pytest.approx(0.4) for w in ("30m", "1h", "6h")},
        **{("availability", "b", w): 0.0 for w in BURN_WINDOWS},
        **{("latency", "b", w): 0.0 for w in BURN_WINDOWS},
    }


def test_readings_before_any_call_hold_the_objectives_only() -> None:
    traffic = Traffic(availability(), latency())
    assert traffic.slo.readings() == {"objective": [({"slo": "availability"}, 0.999), ({"slo": "latency"}, 0.99)],
                                      "remaining": [], "burn": []}
    traffic.observe(T0)
    assert traffic.slo.readings()["burn"] == []


def test_histogram_series_are_read_not_shared() -> None:
    """The tracker keeps totals, not the reading: later records do not change earlier minutes."""
    traffic = Traffic(latency(bound=0.01, objective=0.5))
    traffic.observe(T0)
    traffic.calls(10, seconds=0.001)
    reading = traffic.aggregates.read()
    series = reading["vigil.request.duration"][("m", "1", "Predict")]
    assert isinstance(series, HistogramSeries) and series.count == 10
    traffic.slo.observe(reading, T0 + 30)
    traffic.calls(10, seconds=5.0)
    assert traffic.slo.burn_rate("latency", "m", 60) == 0.0
    traffic.at_minute(1)
    assert traffic.slo.burn_rate("latency", "m", 60) == pytest.approx(2.0)
    assert traffic.slo.burn_rate("latency", "m", 120) == pytest.approx(1.0)
