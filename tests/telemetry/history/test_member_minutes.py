"""A member's minute as stored: its JSON round trip, rows counted in other histogram buckets, unreadable rows."""

from __future__ import annotations

import json

import pytest

from vigil.telemetry.history.member_minutes import FiredAlert, MemberMinute, RowError, decode, encode, histograms_id
from vigil.telemetry.history.minutes import VersionMinute

HISTOGRAMS = histograms_id((0.001, 0.01, 0.1), (0.5, 0.9))
BUSY = VersionMinute(calls={("Predict", "OK"): 40, ("Predict", "INVALID_ARGUMENT"): 2}, duration=(0, 10, 2, 32),
                     duration_sum=0.42, rows=120, predictions={"red": 70, "blue": 50}, confidence=(1, 120),
                     confidence_sum=96.5, feedback=12, correct=9, drift_status=1, drift_psi=0.17)
ALERT = FiredAlert("HighErrors", "warning", "m", "1", "m v1: error ratio 5.0%", 1_700_000_030.5)


def test_a_minute_reads_back_as_it_was_written() -> None:
    minute = MemberMinute({("m", "1"): BUSY, ("m", ""): VersionMinute(calls={("LoadModel", "OK"): 1})},
                          (1_700_000_010.0, 1_700_000_040.0), 1_700_000_010.0, (ALERT,))
    text = encode(minute, HISTOGRAMS)
    assert decode(text, HISTOGRAMS) == minute
    idle = MemberMinute(up=(1_700_000_040.0, 1_700_000_100.0), started=1_700_000_010.0)
    assert decode(encode(idle, HISTOGRAMS), HISTOGRAMS) == idle
    assert len(encode(idle, HISTOGRAMS)) < 100  # a minute without traffic takes a few bytes


def test_a_minute_counted_in_other_buckets_keeps_its_counts_but_not_its_distributions() -> None:
    text = encode(MemberMinute({("m", "1"): BUSY}), histograms_id((0.002,), (0.5,)))
    [read] = decode(text, HISTOGRAMS).versions.values()
    assert read.calls == BUSY.calls and read.predictions == BUSY.predictions and read.rows == 120
    assert (read.duration, read.duration_sum, read.confidence, read.confidence_sum) == ((), 0.0, (), 0.0)


def test_non_finite_numbers_are_written_as_zero() -> None:
    minute = MemberMinute({("m", "1"): VersionMinute(calls={("Predict", "OK"): 1}, drift_status=2,
                                                     drift_psi=float("inf"))})
    assert decode(encode(minute, HISTOGRAMS), HISTOGRAMS).versions[("m", "1")].drift_psi == 0.0


@pytest.mark.parametrize("text", [
    "{not json", "[]", json.dumps({"v": 99}),
    json.dumps({"v": 1, "versions": [{"model": "m", "version": "1", "calls": [["Predict", "OK", -3]]}]}),
    json.dumps({"v": 1, "up": [1, 2, 3]}),
    json.dumps({"v": 1, "alerts": [{"name": 7}]}),
])
def test_an_unreadable_row_is_an_error_of_its_own(text: str) -> None:
    with pytest.raises(RowError):
        decode(text, HISTOGRAMS)
