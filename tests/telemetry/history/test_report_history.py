"""This process's history: the minutes it hands to the store (closed ones once, the open one as it grows, idle ones
for its presence) and forgets once written; and a window of several members' minutes merged and summed up."""

from __future__ import annotations

import pytest
from opentelemetry.metrics import NoOpMeter

from vigil.telemetry.history.member_minutes import FiredAlert, MemberMinute
from vigil.telemetry.history.minutes import MINUTE_SECONDS, VersionMinute
from vigil.telemetry.history.period import summarize
from vigil.telemetry.history.report_history import ReportHistory
from vigil.telemetry.history.window import merge_members
from vigil.telemetry.metrics.instruments import Instruments

M = 28_333_334
"""A minute (Unix seconds // 60)."""
T = M * MINUTE_SECONDS
KEY = ("m", "1")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def calls(minute: MemberMinute) -> int:
    return sum(sum(v.calls.values()) for v in minute.versions.values())


def test_closed_minutes_are_handed_over_once_and_the_open_one_as_it_grows() -> None:
    instruments = Instruments(NoOpMeter("test"))
    clock = Clock(T + 30)
    history = ReportHistory(instruments.aggregates, retention_seconds=3600, clock=clock)
    history.begin()  # half-way through minute M
    instruments.requests.add(("m", "1", "Predict", "OK"), 3)
    rows, through = history.pending(limit=100)
    assert through is None and list(rows) == [M] and calls(rows[M]) == 3  # the open minute, counted so far
    assert rows[M].up == (T + 30, T + 30) and rows[M].started == T + 30
    instruments.requests.add(("m", "1", "Predict", "OK"), 2)
    clock.now = T + 60 + 0.01  # the tick just after the minute's end closes it
    history.tick()
    history.record_alert(FiredAlert("A", "warning", "m", "1", "it fired", clock.now))
    clock.now = T + 3 * 60 + 5  # two minutes on, without traffic or a tick
    history.tick()
    rows, through = history.pending(limit=100)
    assert sorted(rows) == [M, M + 1, M + 2, M + 3] and through == M + 2
    assert calls(rows[M]) == 5 and rows[M].up == (T + 30, T + 60)
    assert rows[M + 1].up == (T + 60, T + 120) and [a.name for a in rows[M + 1].alerts] == ["A"]
    assert rows[M + 2].versions == {} and rows[M + 3].up == (T + 180, T + 185)  # idle: up, nothing counted
    history.release(through)  # written
    assert history.minutes == [] and history.own_minutes(M, M + 3).keys() == {M + 3}
    rows, through = history.pending(limit=100)
    assert list(rows) == [M + 3] and through is None


def test_a_backlog_is_handed_over_a_limited_number_of_minutes_at_a_time() -> None:
    instruments = Instruments(NoOpMeter("test"))
    clock = Clock(T)
    history = ReportHistory(instruments.aggregates, retention_seconds=3600, clock=clock)
    history.begin()
    for _ in range(10):  # ten minutes the store was down
        instruments.requests.add(("m", "1", "Predict", "OK"))
        clock.now += MINUTE_SECONDS
        history.tick()
    rows, through = history.pending(limit=4)
    assert sorted(rows) == [M, M + 1, M + 2, M + 3, M + 10] and through == M + 3
    history.release(through)
    rows, through = history.pending(limit=100)
    assert sorted(rows) == list(range(M + 4, M + 11)) and through == M + 9
    assert sum(calls(r) for r in rows.values()) == 6


def test_minutes_past_the_retention_are_never_handed_over() -> None:
    instruments = Instruments(NoOpMeter("test"))
    clock = Clock(T)
    history = ReportHistory(instruments.aggregates, retention_seconds=600, clock=clock)
    history.begin()
    instruments.requests.add(("m", "1", "Predict", "OK"))
    clock.now += 3600  # an hour with no store, the retention ten minutes
    history.tick()
    rows, through = history.pending(limit=10_000)
    assert min(rows) == M + 50 and through == M + 59 and sum(calls(r) for r in rows.values()) == 0


def up(begin: float, end: float, started: float, n: int = 0, status: int = -1, psi: float = 0.0) -> MemberMinute:
    """A member's minute: up from `begin` to `end`, `n` calls (with a drift result)."""
    counts = {KEY: VersionMinute(calls={("Predict", "OK"): n}, drift_status=status, drift_psi=psi)} if n else {}
    return MemberMinute(counts, (begin, end), started)


def test_members_minutes_add_up_and_rates_are_over_the_time_any_member_was_up() -> None:
    alert = FiredAlert("A", "critical", "m", "1", "down", T + 70)
    rows = [  # a: up over minutes M and M+1; b: up from the middle of M+1 to the end of M+2
        ("a", M, up(T, T + 60, T, 60, status=1, psi=0.2)),
        ("a", M + 1, MemberMinute({KEY: VersionMinute(calls={("Predict", "OK"): 60})}, (T + 60, T + 120), T,
                                  (alert,))),
        ("b", M + 1, up(T + 90, T + 120, T + 90, 30, status=2, psi=0.1)),
        ("b", M + 2, MemberMinute({KEY: VersionMinute(calls={("Predict", "OK"): 30})}, (T + 120, T + 180),
                                  T + 90, (alert,))),  # the same alert, recorded again: one alert
    ]
    window = merge_members(T - 3600, T + 180, rows, seen_before=None, duration_bounds=(0.1,),
                           confidence_bounds=(0.5,))
    assert window.up == [(T, T + 180)] and window.starts == [T, T + 90] and window.members == 2
    report = summarize(window)
    [model] = report["models"]
    assert model["requests"] == 180 and report["totals"]["requests"] == 180
    assert model["versions"][0]["drift"] == {"status": "drift", "max_psi": 0.2}  # the worst of either
    assert [a["name"] for a in report["alerts"]] == ["A"]
    throughput, uptime = report["totals"]["throughput"], report["uptime"]
    assert uptime["up_seconds"] == uptime["observed_seconds"] == 180 and uptime["members"] == 2
    assert throughput["mean_rps"] == pytest.approx(1.0)  # 180 calls over the 180 s, not over the 240 s of both
    assert throughput["peak_requests"] == 90 and throughput["peak_rps"] == pytest.approx(1.5)  # minute M+1


def test_time_when_no_member_was_up_is_down_and_not_in_the_mean_rate() -> None:
    rows = [("a", M, up(T, T + 60, T, 60)), ("b", M + 2, up(T + 120, T + 180, T + 120, 60))]
    report = summarize(merge_members(T - 600, T + 180, rows, seen_before=None, duration_bounds=(0.1,),
                                     confidence_bounds=(0.5,)))
    uptime, throughput = report["uptime"], report["totals"]["throughput"]
    assert (uptime["up_seconds"], uptime["observed_seconds"], uptime["down_seconds"]) == (120, 180, 60)
    assert uptime["ratio"] == pytest.approx(2 / 3) and uptime["observed_from_unix"] == T
    assert throughput["mean_rps_seconds"] == 120 and throughput["mean_rps"] == pytest.approx(1.0)
    # a history that began before the window: observed from the window's start
    earlier = summarize(merge_members(T + 30, T + 180, rows, seen_before=T - 3600, duration_bounds=(0.1,),
                                      confidence_bounds=(0.5,)))["uptime"]
    assert earlier["observed_from_unix"] == T + 30 and earlier["up_seconds"] == 90
