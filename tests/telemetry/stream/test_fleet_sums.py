"""A fleet's snapshot from its members': exact sums, counts kept when a member leaves, the round trip through the
published form, and drift from pooled bin counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.telemetry.metrics.aggregates import HistogramSeries
from vigil.telemetry.quality.drift_check import DriftThresholds, drift_against, drift_counts, drift_from_counts
from vigil.telemetry.quality.reference_profile import build_profile
from vigil.telemetry.stream.fleet import FleetTotals, add_readings, decode_snapshot, encode_snapshot
from vigil.telemetry.stream.frames import AlertSnapshot, Snapshot, VersionSnapshot

REQUESTS = "vigil.requests"
DURATION = "vigil.request.duration"


def member(requests: int, buckets: list[int], *, cpu: float = 1.0, state: str = "READY") -> Snapshot:
    reading = {REQUESTS: {("m", "1", "Predict", "OK"): requests},
               DURATION: {("m", "1", "Predict"): HistogramSeries(buckets, sum(buckets) * 0.01, 0.001, 0.5)}}
    return Snapshot(time_ns=1, monotonic=0.0, reading=reading, cpu_seconds=cpu, memory_bytes=100, in_flight=1,
                    versions=[VersionSnapshot("m", "1", state, True, queue_depth=2, running=1, rows_total=requests)])


def test_members_add_up_exactly() -> None:
    members = [member(20, [1, 2, 3]), member(17, [0, 5, 1], state="LOADING")]
    fleet = FleetTotals().sum(members, local=member(0, [0, 0, 0]))
    assert fleet.reading[REQUESTS] == {("m", "1", "Predict", "OK"): 37}
    series = fleet.reading[DURATION][("m", "1", "Predict")]
    assert series.counts == [1, 7, 4] and series.sum == pytest.approx(0.12)
    [version] = fleet.versions
    assert (version.state, version.queue_depth, version.running, version.rows_total) == ("READY", 4, 2, 37)
    assert (fleet.cpu_seconds, fleet.memory_bytes, fleet.in_flight) == (2.0, 200, 2)


def test_a_member_that_leaves_keeps_its_counts_and_one_that_returns_is_not_counted_twice() -> None:
    totals = FleetTotals(retire_seconds=60)
    a, b = member(20, [1, 0, 0]), member(17, [0, 1, 0])
    live = totals.live({"a": a, "b": b}, now=0)
    assert totals.sum(list(live.values()), local=a).reading[REQUESTS][("m", "1", "Predict", "OK")] == 37
    live = totals.live({"a": a}, now=5)  # b stopped publishing
    assert totals.sum(list(live.values()), local=a).reading[REQUESTS][("m", "1", "Predict", "OK")] == 37
    b_later = member(19, [0, 3, 0])
    live = totals.live({"a": a, "b": b_later}, now=10)  # it was only late
    assert totals.sum(list(live.values()), local=a).reading[REQUESTS][("m", "1", "Predict", "OK")] == 39
    live = totals.live({"a": a}, now=20)
    live = totals.live({"a": a}, now=100)  # gone for good: folded into the retired totals
    fleet = totals.sum(list(live.values()), local=a)
    assert fleet.reading[REQUESTS][("m", "1", "Predict", "OK")] == 39 and fleet.cpu_seconds == 2.0
    assert totals.live({"a": a, "b": b_later}, now=101).keys() == {"a"}  # a retired id is ignored


def test_the_published_form_round_trips() -> None:
    quality = telemetry_pb2.QualityTelemetry(feedback_total=3)
    rollout = telemetry_pb2.RolloutTelemetry(model="m", phase="canary")
    snapshot = Snapshot(time_ns=5, monotonic=0.0, reading=add_readings([member(3, [1, 1, 1]).reading]),
                        versions=member(3, [0]).versions, server_state="SERVING", cpu_seconds=1.5,
                        memory_bytes=7, in_flight=2, quality={("m", "1"): quality}, rollouts=[rollout],
                        alerts=(AlertSnapshot("A", "critical", "m", "1", "s", 9, 0.5, "error_ratio", "50%"),))
    back = decode_snapshot(json.loads(json.dumps(encode_snapshot(snapshot))), monotonic=42.0)
    assert back.reading == snapshot.reading and list(back.versions) == list(snapshot.versions)
    assert back.quality == {("m", "1"): quality} and list(back.rollouts) == [rollout]
    assert back.alerts == snapshot.alerts and back.monotonic == 42.0
    assert (back.server_state, back.cpu_seconds, back.memory_bytes, back.in_flight) == ("SERVING", 1.5, 7, 2)


def test_drift_from_pooled_bin_counts_matches_the_pooled_rows() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(2000, 2))
    probabilities = np.column_stack([np.full(2000, 0.3), np.full(2000, 0.7)])
    profile = build_profile(reference, probabilities, labels=["a", "b"], input_name="x")
    thresholds = DriftThresholds()
    halves = [rng.normal(0.4, 1.0, size=(600, 2)), rng.normal(0.4, 1.0, size=(400, 2))]
    classes = [rng.integers(0, 2, 600), rng.integers(0, 2, 400)]
    parts = [drift_against(profile, rows, c, thresholds, now=0, min_rows=1)
             for rows, c in zip(halves, classes, strict=True)]
    counted = [drift_counts(p) for p in parts if p is not None]
    features = [np.sum([np.asarray(c[0][i]) for c in counted], axis=0) for i in range(2)]
    pooled = drift_from_counts(profile, features, np.sum([c[1] for c in counted], axis=0), thresholds, now=0,
                               min_rows=1)
    whole = drift_against(profile, np.vstack(halves), np.concatenate(classes), thresholds, now=0, min_rows=1)
    assert pooled is not None and whole is not None and pooled.window_rows == 1000
    for mine, exact in zip(pooled.features, whole.features, strict=True):
        assert mine.psi == pytest.approx(exact.psi)
        # compared only at the bin edges (and with the reference's bin proportions rather than its sample): close
        assert mine.ks_statistic == pytest.approx(exact.ks_statistic, abs=0.03)
    assert pooled.chi2_statistic == pytest.approx(whole.chi2_statistic)
    assert drift_from_counts(profile, features, [3, 4], thresholds, now=0, min_rows=100) is None
