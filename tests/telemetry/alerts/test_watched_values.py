"""SignalReader over the server's real aggregates on a clock the test sets: windowed error ratio and latency from
the history of readings, serving state, quality signals, SLO burn rates, and rule parameter validation."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

import numpy as np
import pytest
from opentelemetry.metrics import NoOpMeter

from vigil.telemetry.alerts.slo import Objective, SLOTracker
from vigil.telemetry.alerts.watched_values import ServingState, SignalReader, parse_duration, rule_window
from vigil.telemetry.metrics.instruments import DURATION_BUCKETS, Instruments
from vigil.telemetry.quality.drift import DriftStatus
from vigil.telemetry.quality.drift_check import DriftResult, DriftThresholds, FeatureDrift
from vigil.telemetry.quality.figures import QualityFigures, WindowFigures
from vigil.telemetry.quality.monitor import QualityLimits, QualityMonitor
from vigil.telemetry.quality.outcomes import WindowMetrics
from vigil.telemetry.stream.frames import quantile

START = 1_700_000_040.0  # on a minute boundary


class Server:
    """The aggregates a server records into, its serving state, and a SignalReader over them."""

    def __init__(self, *, history_seconds: float = 3600, slo: SLOTracker | None = None,
                 quality: QualityMonitor | None = None) -> None:
        self.instruments = Instruments(NoOpMeter("test"))
        self.serving = [ServingState("m", "1", True, 3), ServingState("m", "2", False, 0),
                        ServingState("n", "1", True, 12)]
        self.slo = slo
        self.reader = SignalReader(self.instruments.aggregates, serving=lambda: list(self.serving), quality=quality,
                                   slo=slo, history_seconds=history_seconds)

    def calls(self, n: int, code: str = "OK", *, model: str = "m", version: str = "1", method: str = "Predict",
              seconds: float = 0.002) -> None:
        self.instruments.requests.add((model, version, method, code), n)
        for _ in range(n):
            self.instruments.request_duration.record(seconds, (model, version, method))

    def observe(self, now: float) -> None:
        reading = self.reader.observe(now)
        if self.slo is not None:
            self.slo.observe(reading, now)

    def values(self, signal: str, model: str | None = None, **params: str) -> dict[tuple[str, ...], float]:
        return {tuple(labels.values()): value for labels, value in self.reader.read(signal, params, model)}


def bucket_counts(values: Sequence[float]) -> list[int]:
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for value in values:
        counts[bisect_left(DURATION_BUCKETS, value)] += 1
    return counts


# Per minute k after START: 10 good calls and k failed ones.
def scripted_ratio(first_minute: int, last_minute: int) -> float:
    bad = sum(range(first_minute, last_minute + 1))
    return bad / (bad + 10 * (last_minute - first_minute + 1))


def test_error_ratio_counts_the_calls_since_the_reading_one_window_old() -> None:
    server = Server()
    server.calls(100, "INTERNAL")  # before the first reading: never in a window
    server.observe(START)
    assert server.values("error_ratio", window="5m") == {}  # one reading is no interval
    for minute in range(1, 11):
        server.calls(10)
        server.calls(minute, "UNAVAILABLE")
        server.observe(START + 60 * minute)
    assert server.values("error_ratio", window="5m") == {("m", "1"): pytest.approx(scripted_ratio(6, 10))}
    assert server.values("error_ratio", window="2m") == {("m", "1"): pytest.approx(scripted_ratio(9, 10))}
    assert server.values("error_ratio", window="90s") == {("m", "1"): pytest.approx(scripted_ratio(9, 10))}
    assert server.values("error_ratio", window="30s") == {("m", "1"): pytest.approx(scripted_ratio(10, 10))}
    assert server.values("error_ratio") == server.values("error_ratio", window="5m")  # the default window
    # longer than the history: from the oldest reading kept, the first one
    assert server.values("error_ratio", window="1h") == {("m", "1"): pytest.approx(scripted_ratio(1, 10))}


def test_a_window_with_no_new_calls_gives_no_value() -> None:
    server = Server()
    server.observe(START)
    server.calls(5, "INTERNAL")
    server.observe(START + 60)
    assert server.values("error_ratio", window="1m") == {("m", "1"): 1.0}
    assert list(server.values("latency", window="1m")) == [("m", "1")]
    server.observe(START + 120)
    assert server.values("error_ratio", window="1m") == {}  # 0 of 0 is no ratio, not 0
    assert server.values("latency", window="1m") == {}  # and no calls have no latency, not 0 s


def test_error_ratio_counts_every_failed_code_per_version() -> None:
    server = Server()
    server.calls(1, model="n")
    server.observe(START)
    server.calls(6, version="1")
    server.calls(1, "INVALID_ARGUMENT", version="1")  # unlike the SLO, a refused call is an error here
    server.calls(1, "NOT_FOUND", version="1", method="BatchPredict")  # methods are summed
    server.calls(2, "OK", version="1", method="BatchPredict")
    server.calls(3, "INTERNAL", version="2")
    server.calls(1, version="2")
    server.calls(4, "UNAVAILABLE", model="")  # calls naming no model belong to no series
    server.observe(START + 300)
    assert server.values("error_ratio", window="5m") == {("m", "1"): 0.2, ("m", "2"): 0.75}
    labels = [labels for labels, _ in server.reader.read("error_ratio", {"window": "5m"}, None)]
    assert labels == [{"model": "m", "version": "1"}, {"model": "m", "version": "2"}]  # "n" had no new calls


def test_history_keeps_only_what_the_longest_window_needs() -> None:
    server = Server(history_seconds=300)
    for step in range(11):  # readings at 0, 100, ..., 1000 s, with `step` failures and 10 good calls before each
        server.calls(10)
        server.calls(step, "INTERNAL")
        server.observe(START + 100 * step)

    def ratio(first: int) -> float:
        bad = sum(range(first, 11))
        return bad / (bad + 10 * (11 - first))

    assert server.values("error_ratio", window="5m") == {("m", "1"): pytest.approx(ratio(8))}
    assert server.values("error_ratio", window="2m") == {("m", "1"): pytest.approx(ratio(9))}
    # the readings before 700 s are gone: a longer window starts from the oldest kept, the one at 700 s
    assert server.values("error_ratio", window="10m") == {("m", "1"): pytest.approx(ratio(8))}


def test_latency_quantiles_match_frames_quantile_on_the_interval_buckets() -> None:
    server = Server()
    server.calls(100, seconds=7.0)  # before the window: would dominate every quantile if counted
    server.observe(START)
    first = [0.0003] * 50 + [0.003] * 30 + [0.02] * 15
    second = [0.3] * 4 + [20.0]
    for value in first:
        server.calls(1, seconds=value)
    for value in second:
        server.calls(1, seconds=value, method="BatchPredict")
    server.calls(10, model="n", seconds=0.003)
    server.observe(START + 300)
    counts = bucket_counts(first + second)
    for q in ("0.5", "0.9", "0.95", "0.99", "0.999"):
        values = server.values("latency", quantile=q, window="5m")
        assert values[("m", "1")] == pytest.approx(quantile(float(q), DURATION_BUCKETS, counts)), q
    values = server.values("latency")  # p99 over 5 minutes by default
    assert values[("m", "1")] == pytest.approx(quantile(0.99, DURATION_BUCKETS, counts))
    # ten calls in (0.0025, 0.005]: the median lies half-way through the bucket
    assert values[("n", "1")] == pytest.approx(quantile(0.99, DURATION_BUCKETS, bucket_counts([0.003] * 10)))
    assert server.values("latency", quantile="0.5")[("n", "1")] == pytest.approx(0.00375)
    assert server.values("latency", quantile="0.999")[("m", "1")] == 10.0  # the overflow bucket: the last bound


def test_latency_of_each_stage_reads_its_own_histogram() -> None:
    server = Server()
    server.observe(START)
    server.instruments.queue_duration.record_many([0.0002] * 9 + [0.4], ("m", "1"))
    server.instruments.inference_duration.record_many([0.03] * 10, ("m", "1"))
    server.calls(10, seconds=0.6)
    server.observe(START + 60)
    assert server.values("latency", stage="queue", quantile="0.5", window="1m") == {
        ("m", "1"): pytest.approx(quantile(0.5, DURATION_BUCKETS, bucket_counts([0.0002] * 9 + [0.4])))}
    assert server.values("latency", stage="inference", quantile="0.5", window="1m") == {
        ("m", "1"): pytest.approx(0.0375)}  # half-way through (0.025, 0.05]
    assert server.values("latency", stage="request", quantile="0.5", window="1m") == {
        ("m", "1"): pytest.approx(0.75)}  # half-way through (0.5, 1]


def test_a_model_filter_keeps_that_model_only() -> None:
    server = Server()
    server.observe(START)
    server.calls(4, "INTERNAL", model="m")
    server.calls(4, model="n")
    server.observe(START + 60)
    assert server.values("error_ratio", "m", window="1m") == {("m", "1"): 1.0}
    assert server.values("error_ratio", "n", window="1m") == {("n", "1"): 0.0}
    assert list(server.values("latency", "n", window="1m")) == [("n", "1")]
    assert server.values("queue_depth", "n") == {("n", "1"): 12.0}
    assert server.values("model_ready", "m") == {("m", "1"): 1.0, ("m", "2"): 0.0}
    for signal in ("error_ratio", "latency", "queue_depth", "model_ready"):
        assert server.values(signal, "nope") == {}, signal


def test_queue_depth_and_readiness_come_from_the_serving_state_on_every_read() -> None:
    server = Server()
    assert server.values("queue_depth") == {("m", "1"): 3.0, ("m", "2"): 0.0, ("n", "1"): 12.0}
    assert server.values("model_ready") == {("m", "1"): 1.0, ("m", "2"): 0.0, ("n", "1"): 1.0}
    server.serving = [ServingState("m", "2", True, 640)]  # version 2 became ready and busy; the rest went away
    assert server.values("queue_depth") == {("m", "2"): 640.0}
    assert server.values("model_ready") == {("m", "2"): 1.0}
    assert server.values("error_ratio") == {} and server.values("latency") == {}  # never observed: no history


def feature(name: str, psi: float, psi_status: DriftStatus, ks_status: DriftStatus) -> FeatureDrift:
    return FeatureDrift(name, psi, psi_status, 0.1, 0.5, ks_status, (0.5, 0.5))


def test_quality_signals_per_version() -> None:
    instruments = Instruments(NoOpMeter("test"))
    monitor = QualityMonitor(instruments, QualityLimits(accuracy_rows=4, accuracy_seconds=600), DriftThresholds())
    for version in ("1", "2"):
        monitor.watch("m", version, ["a", "b", "c"], "probabilities", profile=None)
    one, two = monitor.get("m", "1"), monitor.get("m", "2")
    assert one is not None and two is not None
    one.drift = DriftResult(START, 500, (feature("x", 0.3, DriftStatus.DRIFT, DriftStatus.NO_DRIFT),
                                         feature("y", 0.12, DriftStatus.POSSIBLE, DriftStatus.POSSIBLE)),
                            3.0, 0.2, DriftStatus.NO_DRIFT, (0.3, 0.3, 0.4))
    two.drift = DriftResult(START, 500, (feature("x", 0.01, DriftStatus.NO_DRIFT, DriftStatus.NO_DRIFT),), 30.0,
                            0.001, DriftStatus.DRIFT, (0.9, 0.05, 0.05))
    # version 1, as the prediction log computed it: the newest 4 labelled rows with 2 right; the time window 6
    # rows, 4 right; the day 8 rows predicted, 6 labelled, 5 right. Version 2 has no labels.
    def metrics(*diagonal_and_off: tuple[int, int, int]) -> WindowMetrics:
        confusion = np.zeros((3, 3), np.int64)
        for t, p, n in diagonal_and_off:
            confusion[t, p] += n
        return WindowMetrics(confusion)

    day = WindowFigures("day", START, 86_400, 8, metrics((0, 0, 5), (1, 0, 1)))
    one.figures = QualityFigures(recent=metrics((2, 2, 2), (0, 1, 1), (1, 0, 1)), count_rows=4,
                                 timed=WindowFigures("time", START, 600, 6, metrics((2, 2, 2), (0, 0, 2),
                                                                                    (0, 1, 1), (1, 0, 1))),
                                 labelled_total=6, windows=(day,), labels=("a", "b", "c"))
    one.confidences.add(np.array([0.9, 0.8, 0.7, 0.6]))
    two.confidences.add(np.array([np.nan, np.nan]))  # no estimate: NaN values are left out

    server = Server(quality=monitor)
    assert server.values("drift_status", test="psi") == {("m", "1"): 2.0, ("m", "2"): 0.0}
    assert server.values("drift_status", test="ks") == {("m", "1"): 1.0, ("m", "2"): 0.0}
    assert server.values("drift_status", test="chi2") == {("m", "1"): 0.0, ("m", "2"): 2.0}
    assert server.values("drift_status") == {("m", "1"): 2.0, ("m", "2"): 2.0}  # "any" by default
    assert server.values("drift_score") == {("m", "1"): 0.3, ("m", "2"): 0.01}
    assert server.values("expected_accuracy") == {("m", "1"): pytest.approx(0.75)}
    assert server.values("accuracy") == {("m", "1"): 0.5}  # count window: the newest 4 rows
    assert server.values("accuracy", window="time") == {("m", "1"): pytest.approx(4 / 6)}
    assert server.values("accuracy", window="day") == {("m", "1"): pytest.approx(5 / 6)}
    assert server.values("label_coverage", window="day") == {("m", "1"): pytest.approx(6 / 8)}
    assert server.values("accuracy", window="week") == {}  # no such window in these figures
    assert server.values("drift_status", "other") == {}
    monitor.forget("m", "1")
    assert server.values("drift_score") == {("m", "2"): 0.01}


def test_quality_signals_without_quality_monitoring_are_empty() -> None:
    server = Server()
    for signal in ("drift_status", "drift_score", "accuracy", "expected_accuracy"):
        assert server.values(signal) == {}, signal


def availability_tracker() -> SLOTracker:
    return SLOTracker([Objective("availability", "availability", 0.999, 30 * 86400.0)], DURATION_BUCKETS)


def test_error_budget_burn_is_the_lowest_burn_over_its_windows() -> None:
    server = Server(slo=availability_tracker())
    server.observe(START)
    server.calls(90, model="m")
    server.calls(10, "UNAVAILABLE", model="m")
    server.calls(1000, model="n")
    server.observe(START + 30)  # m: 10% bad in both windows, 100x; n: none bad
    assert server.values("error_budget_burn", slo="availability", windows="1h,5m") == {
        ("m",): pytest.approx(100.0), ("n",): 0.0}
    labels = [labels for labels, _ in server.reader.read("error_budget_burn", {"slo": "availability"}, "m")]
    assert labels == [{"model": "m"}]  # per model, not per version
    server.calls(300, model="m")
    server.observe(START + 60 * 6 + 30)
    # m: 1h holds 10 bad in 400 (25x), 5m holds 300 good calls (0x); n: nothing in the last 5 minutes
    assert server.slo is not None
    assert server.slo.burn_rate("availability", "m", 3600) == pytest.approx(25.0)
    assert server.values("error_budget_burn", slo="availability", windows="1h,5m") == {("m",): 0.0}
    assert server.values("error_budget_burn", slo="availability", windows="1h") == {
        ("m",): pytest.approx(25.0), ("n",): 0.0}  # "1h" by default
    assert server.values("error_budget_burn", slo="availability") == server.values(
        "error_budget_burn", slo="availability", windows="1h")
    assert server.values("error_budget_burn", "n", slo="availability", windows="6h,1h") == {("n",): 0.0}
    server.calls(20, "INTERNAL", model="m")
    server.observe(START + 60 * 7 + 30)
    # 1h: 30 bad in 420 calls; 5m: 20 bad in 320 calls; the lower one
    assert server.values("error_budget_burn", "m", slo="availability", windows="1h,5m") == {
        ("m",): pytest.approx(min(30 / 420, 20 / 320) / 0.001)}


def test_error_budget_burn_without_its_slo_is_empty() -> None:
    server = Server(slo=availability_tracker())
    server.observe(START)
    server.calls(10, "INTERNAL")
    server.observe(START + 30)
    assert server.values("error_budget_burn", slo="latency") == {}
    assert server.values("error_budget_burn") == {}
    without = Server()
    without.observe(START)
    assert without.values("error_budget_burn", slo="availability") == {}


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0), ("1.5h", 5400.0), (" 10m ", 600.0), ("0s", 0.0)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "m", "5 m", "-5m", "5M", "5ms", "1w", "", "1h30m", "five minutes"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration like 30s, 5m, 1h or 1d"):
        parse_duration(text)


@pytest.mark.parametrize(("signal", "params", "seconds"), [
    ("error_ratio", {}, 300.0),
    ("error_ratio", {"window": "10m"}, 600.0),
    ("latency", {"quantile": "0.5", "stage": "queue", "window": "1h"}, 3600.0),
    ("latency", {}, 300.0),
    ("queue_depth", {}, 0.0),
    ("model_ready", {}, 0.0),
    ("drift_status", {"test": "chi2"}, 0.0),
    ("drift_score", {}, 0.0),
    ("accuracy", {"window": "time"}, 0.0),
    ("expected_accuracy", {}, 0.0),
    ("error_budget_burn", {"slo": "availability", "windows": "6h,30m"}, 0.0),  # the tracker keeps its own history
])
def test_rule_windows(signal: str, params: dict[str, str], seconds: float) -> None:
    assert rule_window(signal, params) == seconds


@pytest.mark.parametrize(("signal", "params", "message"), [
    ("latency", {"quantile": "1"}, "quantile must lie between 0 and 1, not 1.0"),
    ("latency", {"quantile": "0"}, "quantile must lie between 0 and 1"),
    ("latency", {"quantile": "nan"}, "quantile must lie between 0 and 1"),
    ("latency", {"quantile": "p99"}, "could not convert"),
    ("latency", {"stage": "gpu"}, r"stage must be one of \['inference', 'queue', 'request'\]"),
    ("latency", {"window": "5 minutes"}, "not a duration"),
    ("error_ratio", {"window": "1w"}, "not a duration"),
    ("drift_status", {"test": "kl"}, "test must be psi, ks, chi2 or any"),
    ("accuracy", {"window": "month"}, "window must be one of count, time, hour, day, week"),
    ("error_budget_burn", {"windows": "1h,5x"}, "'5x' is not a duration"),
    ("error_budget_burn", {"windows": ""}, "not a duration"),
])
def test_bad_rule_parameters(signal: str, params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rule_window(signal, params)


def test_values_are_finite_numbers() -> None:
    server = Server(slo=availability_tracker())
    server.observe(START)
    server.calls(3, "INTERNAL", seconds=0.2)
    server.observe(START + 60)
    for signal, params in [("error_ratio", {}), ("latency", {}), ("queue_depth", {}), ("model_ready", {}),
                           ("error_budget_burn", {"slo": "availability"})]:
        series = server.reader.read(signal, params, None)
        assert series, signal
        for labels, value in series:
            assert isinstance(value, float) and math.isfinite(value), (signal, labels, value)
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
