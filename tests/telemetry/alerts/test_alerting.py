"""Alerting end to end: a real server's rules driven on a rule clock the test sets (the Telemetry stream's events and
alerts, the log, /metrics), its own schedule, a real Alertmanager receiving the server's alert and its resolution,
the alert loop's failure handling, the default rules against the Prometheus contract, and the alert settings."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import numpy as np
import pytest
from opentelemetry.metrics import NoOpMeter

from tests.conftest import running_app
from tests.deploy.test_rules import SERVER_DEFAULT_ALERTS
from tests.deploy.test_rules import alerts as prometheus_alerts
from tests.telemetry.alerts.test_alertmanager import ALERTMANAGER, Receiver, alertmanager_process, wait_until
from vigil.clients import AsyncClient, InvalidInput
from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.app import App
from vigil.server.models.repository import ModelRepository
from vigil.server.monitoring import Monitoring, alert_rules
from vigil.server.settings import (
    DEFAULT_ALERT_RULES,
    DEFAULT_SLOS,
    AlertRuleSettings,
    AlertSettings,
    QualitySettings,
    Settings,
    SLOSettings,
    StoreSettings,
)
from vigil.telemetry.alerts.alertmanager import AlertmanagerNotifier, rfc3339
from vigil.telemetry.alerts.engine import AlertEngine, TransitionKind
from vigil.telemetry.alerts.loop import AlertLoop
from vigil.telemetry.alerts.rules import AlertRule, Severity
from vigil.telemetry.alerts.slo import BURN_WINDOWS, Objective, SLOTracker
from vigil.telemetry.alerts.watched_values import ServingState, SignalReader, parse_duration
from vigil.telemetry.metrics.instruments import DURATION_BUCKETS, Instruments

Kind = telemetry_pb2.TelemetryEvent.Kind
MODEL = "breast_cancer"
RULE = AlertRuleSettings(name="TooManyErrors", signal="error_ratio", op=">", threshold=0.2, for_seconds=60,
                         severity="critical", summary="{model} v{version}: {value} of calls failed",
                         params={"window": "5m"})
FIRING_GAUGE = 'vigil_alerts_firing{alertname="TooManyErrors",severity="critical"}'


def alert_settings(*rules: AlertRuleSettings, **extra: Any) -> AlertSettings:
    """Only the given rules (RULE by default); the loop's own schedule is an hour, so the test drives it."""
    values: dict[str, Any] = {"rules": list(rules or [RULE]), "interval_seconds": 3600}
    values.update(extra)
    return AlertSettings(**values)


def loop_of(app: App) -> AlertLoop:
    assert app.monitoring is not None and app.monitoring.alerts is not None
    return app.monitoring.alerts


async def good_calls(client: AsyncClient, n: int, app: App) -> None:
    for _ in range(n):
        result = await client.predict(MODEL, np.zeros((1, 30), np.float32))
        assert result.outputs
    await counted(app)


async def bad_calls(client: AsyncClient, n: int, app: App) -> None:
    """Calls with the wrong feature count: INVALID_ARGUMENT."""
    for _ in range(n):
        with pytest.raises(InvalidInput):
            await client.predict(MODEL, np.zeros((1, 29), np.float32))
    await counted(app)


async def counted(app: App) -> None:
    """Wait until the server has counted every call it answered: a call is counted as its handler ends, a moment
    after its caller has the answer."""
    interceptor = app._interceptor
    assert interceptor is not None
    for _ in range(200):
        if not any(n for method, n in interceptor.in_flight.items() if method != "Telemetry"):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"calls still in flight: {interceptor.in_flight}")


async def metrics_page(app: App) -> str:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, \
            session.get(f"http://127.0.0.1:{app.http_port}/metrics") as response:
        assert response.status == 200
        return await response.text()


def sample(page: str, series: str) -> float | None:
    """The value of one exact series on a Prometheus page."""
    for line in page.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return None


class Frames:
    """A Telemetry stream subscription whose every wait has a deadline."""

    def __init__(self, client: AsyncClient, **request: Any) -> None:
        self._frames = cast(AsyncGenerator[telemetry_pb2.TelemetryFrame, None], client.telemetry(**request))
        self.events: list[telemetry_pb2.TelemetryEvent] = []

    async def until(self, predicate: Callable[[telemetry_pb2.TelemetryFrame], bool], what: str,
                    timeout: float = 10.0) -> telemetry_pb2.TelemetryFrame:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no Telemetry frame with {what} within {timeout:g}s")
            try:
                frame = await asyncio.wait_for(anext(self._frames), remaining)
            except TimeoutError:
                raise AssertionError(f"no Telemetry frame with {what} within {timeout:g}s") from None
            self.events.extend(frame.events)
            if predicate(frame):
                return frame

    def alert_events(self) -> list[telemetry_pb2.TelemetryEvent]:
        return [e for e in self.events if e.kind in (Kind.ALERT_FIRED, Kind.ALERT_RESOLVED)]

    async def aclose(self) -> None:
        await self._frames.aclose()


def has_event(kind: int) -> Callable[[telemetry_pb2.TelemetryFrame], bool]:
    return lambda frame: any(e.kind == kind for e in frame.events)


async def test_a_rule_goes_pending_fires_and_resolves_on_the_rule_clock(model_repo: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vigil.telemetry.alerts.loop")
    async with running_app(model_repo, alerts=alert_settings()) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        loop = loop_of(app)
        assert app.monitoring is not None
        frames = Frames(client, interval_ms=100, models=[MODEL], sections=["events", "alerts"])
        try:
            await frames.until(lambda frame: True, "anything")
            t0 = time.time()
            assert loop.evaluate(now=t0 - 600) == []  # the reading the 5m window starts from
            assert sample(await metrics_page(app), FIRING_GAUGE) == 0.0  # a quiet rule reports 0, not nothing

            await good_calls(client, 2, app)
            await bad_calls(client, 3, app)  # 3 of 5 calls failed: 0.6 > 0.2
            assert loop.evaluate(now=t0) == []
            [pending] = loop.engine.pending()
            assert (pending.rule.name, pending.value, pending.active_since) == ("TooManyErrors", 0.6, t0)
            assert loop.evaluate(now=t0 + 59.9) == []  # 59.9 s of the 60 the rule asks for
            assert loop.firing() == [] and app.monitoring.alert_states() == []
            for _ in range(3):  # frames keep coming, with no alert and no alert event while pending
                frame = await frames.until(lambda frame: True, "a frame")
                assert list(frame.alerts) == []
            assert frames.alert_events() == []

            [fired] = loop.evaluate(now=t0 + 61)
            assert fired.kind is TransitionKind.FIRED and fired.at == t0 + 61
            assert fired.alert.value == 0.6 and fired.alert.active_since == t0
            labels = {"alertname": "TooManyErrors", "severity": "critical", "model": MODEL, "version": "1"}
            assert fired.alert.label_dict == labels
            assert loop.evaluate(now=t0 + 62) == []  # firing stays firing: no second notification

            frame = await frames.until(has_event(Kind.ALERT_FIRED), "the ALERT_FIRED event")
            [event] = frames.alert_events()
            assert (event.kind, event.model, event.version) == (Kind.ALERT_FIRED, MODEL, "1")
            assert event.message == "TooManyErrors (critical): 60.0% of calls failed"
            if not frame.alerts:
                frame = await frames.until(lambda f: len(f.alerts) > 0, "the firing alert")
            [alert] = frame.alerts
            assert (alert.name, alert.severity, alert.model, alert.version) == ("TooManyErrors", "critical", MODEL, "1")
            assert alert.summary == "breast_cancer v1: 60.0% of calls failed" and alert.value == 0.6
            assert alert.since_unix_nanos == int((t0 + 61) * 1e9)

            [record] = [r for r in caplog.records if r.name == "vigil.telemetry.alerts.loop"]
            assert record.levelno == logging.WARNING
            assert record.getMessage() == "alert TooManyErrors firing: breast_cancer v1: 60.0% of calls failed"
            assert record.__dict__["fields"] == {"alert": "TooManyErrors", "severity": "critical", "state": "firing",
                                                 "value": 0.6, "labels": labels}

            page = await metrics_page(app)
            assert sample(page, FIRING_GAUGE) == 1.0
            # the failures were the caller's (INVALID_ARGUMENT): they do not spend the availability budget
            assert sample(page, f'vigil_slo_burn_rate{{model="{MODEL}",slo="availability",window="5m"}}') == 0.0
            assert sample(page, f'vigil_slo_error_budget_remaining{{model="{MODEL}",slo="availability"}}') == 1.0

            # good calls dilute the window (which still starts at t0 - 600): 3 of 14 is still above 0.2
            await good_calls(client, 9, app)
            assert loop.evaluate(now=t0 + 90) == [] and loop.firing()[0].value == pytest.approx(3 / 14)
            await good_calls(client, 1, app)  # 3 of 15 is exactly 0.2, which is not above 0.2
            [resolved] = loop.evaluate(now=t0 + 120)
            assert resolved.kind is TransitionKind.RESOLVED and resolved.alert.value == 0.2
            assert (resolved.alert.fired_at, resolved.alert.resolved_at) == (t0 + 61, t0 + 120)
            assert loop.firing() == [] and loop.engine.pending() == []

            frame = await frames.until(has_event(Kind.ALERT_RESOLVED), "the ALERT_RESOLVED event")
            assert [e.kind for e in frames.alert_events()] == [Kind.ALERT_FIRED, Kind.ALERT_RESOLVED]
            event = frames.alert_events()[1]
            assert (event.model, event.version) == (MODEL, "1")
            assert event.message == "TooManyErrors (critical): 20.0% of calls failed"
            assert list(frame.alerts) == []
            resolved_record = [r for r in caplog.records if r.name == "vigil.telemetry.alerts.loop"][1]
            assert resolved_record.levelno == logging.INFO
            assert resolved_record.getMessage() == \
                "alert TooManyErrors resolved: breast_cancer v1: 20.0% of calls failed"
            assert sample(await metrics_page(app), FIRING_GAUGE) == 0.0
        finally:
            await frames.aclose()


async def test_an_alert_resolves_once_its_failures_leave_the_window(model_repo: Path) -> None:
    async with running_app(model_repo, alerts=alert_settings()) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        loop = loop_of(app)
        t0 = time.time()
        loop.evaluate(now=t0 - 600)
        await bad_calls(client, 1, app)
        loop.evaluate(now=t0)
        [fired] = loop.evaluate(now=t0 + 60)
        assert fired.alert.value == 1.0
        assert loop.evaluate(now=t0 + 200) == []  # the window t0-100..t0+200 still starts before the failure
        # no call at all since: the rule's series disappears, which resolves it with the last value seen
        [resolved] = loop.evaluate(now=t0 + 400)
        assert resolved.kind is TransitionKind.RESOLVED and resolved.alert.value == 1.0
        await bad_calls(client, 1, app)  # a fresh failure starts a fresh pending period
        assert loop.evaluate(now=t0 + 401) == [] and len(loop.engine.pending()) == 1


async def test_the_loop_evaluates_on_its_own_schedule(model_repo: Path) -> None:
    rule = AlertRuleSettings(name="AnyErrors", signal="error_ratio", op=">", threshold=0.5, severity="warning",
                             params={"window": "1m"})
    async with running_app(model_repo, alerts=alert_settings(rule, interval_seconds=0.1)) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        frames = Frames(client, interval_ms=100, models=[MODEL], sections=["events", "alerts"])
        try:
            deadline = time.monotonic() + 20
            while not any(e.kind == Kind.ALERT_FIRED for e in frames.events):
                assert time.monotonic() < deadline, "the loop never fired the alert by itself"
                await bad_calls(client, 1, app)
                await frames.until(lambda frame: True, "a frame")
            assert loop_of(app).firing()[0].rule.name == "AnyErrors"
            deadline = time.monotonic() + 20
            while not any(e.kind == Kind.ALERT_RESOLVED for e in frames.events):
                assert time.monotonic() < deadline, "the loop never resolved the alert by itself"
                await good_calls(client, 5, app)
                await frames.until(lambda frame: True, "a frame")
            assert loop_of(app).firing() == []
        finally:
            await frames.aclose()


async def alertmanager_ready(session: aiohttp.ClientSession, url: str, process: Any, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.get(f"{url}/-/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        assert process.poll() is None, "alertmanager exited:\n" + log_path.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, "alertmanager not ready within 30s"
        await asyncio.sleep(0.1)


def instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.skipif(ALERTMANAGER is None, reason="the prometheus-alertmanager binary (Debian package "
                                                 "prometheus-alertmanager) is not installed")
async def test_a_real_alertmanager_receives_the_servers_alert_and_its_resolution(model_repo: Path,
                                                                                tmp_path: Path) -> None:
    hook = Receiver()
    await hook.start()
    try:
        with alertmanager_process(tmp_path, hook.port) as (process, url, log_path):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                await alertmanager_ready(session, url, process, log_path)
            async with running_app(model_repo, alerts=alert_settings(alertmanager_url=url)) as app, \
                    AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
                loop = loop_of(app)
                # rule times an hour ago: Alertmanager treats an alert as resolved once its endsAt has passed
                base = time.time() - 3600
                loop.evaluate(now=base)
                await good_calls(client, 3, app)
                await bad_calls(client, 2, app)  # 2 of 5: 0.4
                loop.evaluate(now=base + 10)
                [fired] = loop.evaluate(now=base + 71)
                assert fired.kind is TransitionKind.FIRED

                def notifications(status: str) -> list[dict[str, Any]]:
                    return [alert for path, body in hook.requests if path == "/hook" and body["status"] == status
                            for alert in body["alerts"] if alert["labels"].get("alertname") == "TooManyErrors"]

                await wait_until(lambda: bool(notifications("firing")), "the firing notification", timeout=30)
                [alert] = notifications("firing")
                assert alert["status"] == "firing"
                assert alert["labels"] == {"alertname": "TooManyErrors", "severity": "critical", "model": MODEL,
                                           "version": "1"}
                assert alert["annotations"] == {"summary": "breast_cancer v1: 40.0% of calls failed", "value": "0.4"}
                assert instant(alert["startsAt"]) == pytest.approx(base + 71, abs=0.001)

                await good_calls(client, 5, app)  # 2 of 10 is 0.2, not above it
                [resolved] = loop.evaluate(now=base + 100)
                assert resolved.kind is TransitionKind.RESOLVED
                await wait_until(lambda: bool(notifications("resolved")), "the resolved notification", timeout=30)
                [alert] = notifications("resolved")
                assert alert["labels"] == {"alertname": "TooManyErrors", "severity": "critical", "model": MODEL,
                                           "version": "1"}
                assert alert["annotations"]["value"] == "0.2"
                assert instant(alert["endsAt"]) == pytest.approx(base + 100, abs=0.001)
                assert process.poll() is None
    finally:
        await hook.stop()


# -- the alert loop on its own ---------------------------------------------------------------------------------

START = 1_700_000_040.0
BACKLOG = AlertRule(name="Backlog", signal="queue_depth", op=">", threshold=100, severity="warning",
                    summary="{model} v{version}: {value} queued")


class Parts:
    """Real aggregates, serving state and SLO tracker for an AlertLoop."""

    def __init__(self) -> None:
        self.instruments = Instruments(NoOpMeter("test"))
        self.serving = [ServingState("m", "1", True, 500)]
        self.slo = SLOTracker([Objective("availability", "availability", 0.99, 86400.0)], DURATION_BUCKETS)
        self.signals = SignalReader(self.instruments.aggregates, serving=lambda: list(self.serving), quality=None,
                                    slo=self.slo, history_seconds=600)


def test_evaluate_feeds_the_slo_tracker_and_survives_a_failing_publisher(caplog: pytest.LogCaptureFixture) -> None:
    parts = Parts()
    published: list[Any] = []

    def publish(transition: Any) -> None:
        published.append(transition)
        raise RuntimeError("the hub is gone")

    burn = AlertRule(name="Burning", signal="error_budget_burn", op=">", threshold=10, severity="critical",
                     params={"slo": "availability", "windows": "5m"})
    loop = AlertLoop(AlertEngine([BACKLOG, burn]), parts.signals, parts.slo, publish=publish)
    assert loop.evaluate(now=START) == [published[0]]  # the backlog fires at once; publishing it fails
    assert "publishing alert Backlog failed" in caplog.text and "RuntimeError: the hub is gone" in caplog.text
    assert [a.rule.name for a in loop.firing()] == ["Backlog"] and loop.firing()[0].value == 500.0
    parts.instruments.requests.add(("m", "1", "Predict", "OK"), 80)
    parts.instruments.requests.add(("m", "1", "Predict", "UNAVAILABLE"), 20)
    parts.serving = [ServingState("m", "1", True, 0)]
    transitions = loop.evaluate(now=START + 30)  # the tracker saw the calls through the loop's reading
    assert parts.slo.burn_rate("availability", "m", 300) == pytest.approx(20.0)
    assert [(t.kind, t.alert.rule.name) for t in transitions] == [(TransitionKind.RESOLVED, "Backlog"),
                                                                  (TransitionKind.FIRED, "Burning")]  # rule order
    assert transitions[1].alert.label_dict == {"alertname": "Burning", "severity": "critical", "model": "m"}
    assert len(published) == 3


async def test_the_schedule_survives_a_failed_evaluation_and_stops_on_close(caplog: pytest.LogCaptureFixture
                                                                            ) -> None:
    parts = Parts()
    times: list[float] = []

    def clock() -> float:
        times.append(START + len(times))
        if len(times) == 1:
            raise RuntimeError("clock unreadable")
        return times[-1]

    loop = AlertLoop(AlertEngine([BACKLOG]), parts.signals, parts.slo, clock=clock)
    await loop.start(0.02)
    try:
        await wait_until(lambda: len(loop.firing()) == 1, "the second, successful evaluation")
    finally:
        await loop.close()
    assert "evaluating alert rules failed" in caplog.text and "clock unreadable" in caplog.text
    assert loop.firing()[0].fired_at == START + 1
    evaluations = len(times)
    await asyncio.sleep(0.1)
    assert len(times) == evaluations  # closed: no more evaluations
    await loop.close()  # closing twice is harmless


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def test_the_loop_hands_transitions_and_firing_alerts_to_the_notifier(receiver: Receiver) -> None:
    parts = Parts()
    notifier = AlertmanagerNotifier(receiver.url, resend_seconds=60, clock=lambda: START)
    loop = AlertLoop(AlertEngine([BACKLOG]), parts.signals, parts.slo, notifier=notifier)
    await loop.start(3600)  # starts the notifier too
    try:
        loop.evaluate(now=START)
        await wait_until(lambda: len(receiver.alerts) == 1, "the firing alert")
        parts.serving = []
        loop.evaluate(now=START + 45)
        await wait_until(lambda: len(receiver.alerts) == 2, "the resolution")
    finally:
        await loop.close()
    firing, resolved = receiver.alerts
    labels = {"alertname": "Backlog", "severity": "warning", "model": "m", "version": "1"}
    assert firing["labels"] == labels and firing["annotations"] == {"summary": "m v1: 500 queued", "value": "500.0"}
    assert firing["startsAt"] == rfc3339(START)
    assert resolved["labels"] == labels and resolved["endsAt"] == rfc3339(START + 45)
    assert notifier.sent == 2 and notifier.queued == 0
    with pytest.raises(RuntimeError, match="closed"):
        await notifier.start()  # the loop's close closed it


# -- the default rules and the settings -------------------------------------------------------------------------

def test_the_default_rules_match_the_prometheus_rules_contract() -> None:
    names = [rule.name for rule in DEFAULT_ALERT_RULES]
    assert len(names) == len(set(names)) and set(names) == set(SERVER_DEFAULT_ALERTS)
    found = prometheus_alerts()
    for rule in DEFAULT_ALERT_RULES:
        severity, hold, comparison = SERVER_DEFAULT_ALERTS[rule.name]
        op, threshold = comparison.split()
        assert (rule.severity, rule.for_seconds, rule.op, rule.threshold) == (
            severity, parse_duration(hold), op, float(threshold)), rule.name
        expr = found[rule.name]["expr"]
        params = rule.params
        # the server's windows, quantiles and tests are the ones the Prometheus expression reads
        if rule.signal == "error_ratio":
            assert f"rate{params['window']}" in expr, rule.name
        elif rule.signal == "latency":
            assert f"p{round(float(params['quantile']) * 100)}_{params['window']}" in expr, rule.name
        elif rule.signal == "drift_status":
            assert f'test="{params["test"]}"' in expr, rule.name
        elif rule.signal == "accuracy":
            assert f'window="{params["window"]}"' in expr, rule.name
        elif rule.signal == "store_dropped_rows":
            assert f"increase(vigil_store_dropped_rows_total[{params['window']}])" in expr, rule.name
        elif rule.signal == "error_budget_burn":
            for window in params["windows"].split(","):
                assert window in BURN_WINDOWS, rule.name
                assert f"vigil_slo_{params['slo']}:burn_rate{window} {comparison}" in expr, rule.name
        else:
            assert rule.signal in ("queue_depth", "model_ready", "expected_accuracy", "rollout_rolled_back") \
                and not params, rule.name


def test_the_default_settings_build_the_default_rules() -> None:
    defaults = AlertSettings()
    assert defaults.rules == list(DEFAULT_ALERT_RULES) and defaults.slos == list(DEFAULT_SLOS)
    rules = alert_rules(defaults)
    assert [(r.name, r.signal, r.op, r.threshold, r.for_seconds, r.severity, dict(r.params)) for r in rules] == [
        (s.name, s.signal, s.op, s.threshold, s.for_seconds, Severity(s.severity), s.params)
        for s in DEFAULT_ALERT_RULES]
    AlertEngine(rules)


def burn_rule(slo: str) -> AlertRuleSettings:
    return AlertRuleSettings(name="Burn", signal="error_budget_burn", threshold=1, params={"slo": slo})


def test_rule_and_slo_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"alert rule Burn watches SLO 'nope', which is not defined "
                                         r"\(SLOs: availability, latency\)"):
        AlertSettings(rules=[burn_rule("nope")])
    with pytest.raises(ValueError, match=r"watches SLO None, which is not defined"):
        AlertSettings(rules=[AlertRuleSettings(name="Burn", signal="error_budget_burn", threshold=1)])
    with pytest.raises(ValueError, match=r"VigilErrorBudgetFastBurn watches SLO 'availability'.*\(SLOs: none\)"):
        AlertSettings(slos=[])  # the default rules need the default availability SLO
    strict = SLOSettings(name="strict", kind="availability", objective=0.9999)
    assert AlertSettings(rules=[burn_rule("strict")], slos=[strict]).rules[0].params == {"slo": "strict"}
    with pytest.raises(ValueError, match="alert rule names must be unique; repeated: TooManyErrors"):
        AlertSettings(rules=[RULE, burn_rule("availability"), RULE])
    with pytest.raises(ValueError, match="SLO names must be unique; repeated: strict"):
        AlertSettings(rules=[], slos=[strict, strict])
    with pytest.raises(ValueError, match="latency_seconds is required for latency objectives"):
        SLOSettings(name="lat", kind="latency", objective=0.99)
    for bad in ({"signal": "throughput"}, {"op": "=>"}, {"severity": "page"}, {"threshold": float("inf")},
                {"for_seconds": -1}, {"name": "two words"}, {"colour": "red"}):
        with pytest.raises(ValueError):
            AlertRuleSettings.model_validate({"name": "R", "signal": "queue_depth", "threshold": 1, **bad})


def monitoring(tmp_path: Path, settings: AlertSettings) -> Monitoring:
    return Monitoring(QualitySettings(enabled=False), settings, Instruments(NoOpMeter("test")),
                      ModelRepository(tmp_path), None, duration_bounds=DURATION_BUCKETS,
                      store_settings=StoreSettings(url="memory"), store=None)


def test_monitoring_refuses_rules_and_slos_it_cannot_evaluate(tmp_path: Path) -> None:
    slow = AlertRuleSettings(name="Slow", signal="latency", threshold=1, params={"quantile": "2"})
    with pytest.raises(ValueError, match=r"^alert rule Slow: quantile must lie between 0 and 1, not 2.0$"):
        monitoring(tmp_path, alert_settings(slow))
    odd = SLOSettings(name="fast", kind="latency", objective=0.99, latency_seconds=0.3)
    with pytest.raises(ValueError, match=r"SLO fast: latency_seconds=0.3 is not a bound of the request-duration "
                                         r"histogram \(0.0001, 0.00025, .*, 10\)"):
        monitoring(tmp_path, alert_settings(RULE, slos=[odd]))
    built = monitoring(tmp_path, alert_settings(RULE, slos=[odd.model_copy(update={"latency_seconds": 0.25})]))
    assert built.slo is not None and list(built.slo.objectives) == ["fast"]
    assert built.alerts is not None and [r.name for r in built.alerts.engine.rules] == ["TooManyErrors"]
    assert monitoring(tmp_path, AlertSettings(enabled=False)).alerts is None


CONFIG = """\
grpc_port = 9100

[alerts]
interval_seconds = 30
resend_seconds = 120
alertmanager_url = "http://alertmanager:9093"

[[alerts.rules]]
name = "Slow"
signal = "latency"
op = ">="
threshold = 0.2
for_seconds = 120
severity = "info"
model = "breast_cancer"
labels = { team = "ml" }
params = { quantile = "0.9", window = "10m" }

[[alerts.rules]]
name = "Burn"
signal = "error_budget_burn"
threshold = 10
params = { slo = "strict", windows = "1h,5m" }

[[alerts.slos]]
name = "strict"
kind = "availability"
objective = 0.9999
period_days = 7
"""


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("VIGIL_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_alert_settings_come_from_the_config_file_and_the_environment_wins(clean_environment: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    config = tmp_path / "vigil.toml"
    config.write_text(CONFIG, encoding="utf-8")
    clean_environment.setenv("VIGIL_CONFIG_FILE", str(config))
    loaded = Settings()
    assert loaded.grpc_port == 9100
    alerts = loaded.alerts
    assert (alerts.interval_seconds, alerts.resend_seconds, alerts.alertmanager_url) == (30, 120,
                                                                                      "http://alertmanager:9093")
    assert [r.model_dump() for r in alerts.rules] == [
        {"name": "Slow", "signal": "latency", "op": ">=", "threshold": 0.2, "for_seconds": 120, "severity": "info",
         "labels": {"team": "ml"}, "summary": "", "model": "breast_cancer",
         "params": {"quantile": "0.9", "window": "10m"}},
        {"name": "Burn", "signal": "error_budget_burn", "op": ">", "threshold": 10, "for_seconds": 0,
         "severity": "warning", "labels": {}, "summary": "", "model": None,
         "params": {"slo": "strict", "windows": "1h,5m"}},
    ]
    assert [(s.name, s.kind, s.objective, s.period_days) for s in alerts.slos] == [("strict", "availability",
                                                                                    0.9999, 7)]

    clean_environment.setenv("VIGIL_GRPC_PORT", "9200")
    clean_environment.setenv("VIGIL_ALERTS__INTERVAL_SECONDS", "7")
    loaded = Settings()
    assert loaded.grpc_port == 9200 and loaded.alerts.interval_seconds == 7  # the environment wins ...
    assert loaded.alerts.alertmanager_url == "http://alertmanager:9093"  # ... over those fields only
    assert [r.name for r in loaded.alerts.rules] == ["Slow", "Burn"]
    assert Settings(grpc_port=9300).grpc_port == 9300  # and arguments win over both

    config.write_text(CONFIG.replace('slo = "strict"', 'slo = "lenient"'), encoding="utf-8")
    with pytest.raises(ValueError, match="alert rule Burn watches SLO 'lenient', which is not defined"):
        Settings()
    clean_environment.setenv("VIGIL_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="names no readable file"):
        Settings()


async def test_a_server_runs_the_rules_of_its_config_file(clean_environment: pytest.MonkeyPatch, tmp_path: Path,
                                                          model_repo: Path) -> None:
    config = tmp_path / "vigil.toml"
    config.write_text(CONFIG.replace('alertmanager_url = "http://alertmanager:9093"\n', "")
                      .replace("interval_seconds = 30", "interval_seconds = 3600")
                      .replace("threshold = 0.2", "threshold = 0.0"), encoding="utf-8")
    clean_environment.setenv("VIGIL_CONFIG_FILE", str(config))
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        loop = loop_of(app)
        slow, burn = loop.engine.rules
        assert (slow.name, slow.signal, slow.op, slow.threshold, slow.for_seconds, slow.severity, slow.model) == (
            "Slow", "latency", ">=", 0.0, 120.0, Severity.INFO, MODEL)
        assert dict(slow.labels) == {"team": "ml"} and dict(slow.params) == {"quantile": "0.9", "window": "10m"}
        assert (burn.name, dict(burn.params)) == ("Burn", {"slo": "strict", "windows": "1h,5m"})
        assert app.monitoring is not None and app.monitoring.slo is not None
        assert list(app.monitoring.slo.objectives) == ["strict"]
        t0 = time.time()
        loop.evaluate(now=t0 - 600)
        await good_calls(client, 3, app)
        assert loop.evaluate(now=t0) == [] and [a.rule.name for a in loop.engine.pending()] == ["Slow"]
        [fired] = loop.evaluate(now=t0 + 120)  # the p90 latency has been >= 0 for the 120 s the file asks for
        assert fired.alert.label_dict == {"alertname": "Slow", "severity": "info", "team": "ml", "model": MODEL,
                                          "version": "1"}
        assert 0 < fired.alert.value < 10
        assert loop.firing() == [fired.alert]  # no failure: the strict SLO's budget does not burn


def test_a_drift_alert_names_what_drifts_and_events_do_not_repeat_the_model() -> None:
    from vigil.server.monitoring import without_target
    from vigil.telemetry.quality.drift import DriftStatus
    from vigil.telemetry.quality.drift_check import DriftResult, DriftThresholds, FeatureDrift
    from vigil.telemetry.quality.monitor import QualityLimits, QualityMonitor

    assert without_target("m v1: accuracy 80.0%", "m", "1") == "accuracy 80.0%"
    assert without_target("m: burns 14.4× too fast", "m", "") == "burns 14.4× too fast"
    assert without_target("other: text", "m", "1") == "other: text"
    instruments = Instruments(NoOpMeter("test"))
    monitor = QualityMonitor(instruments, QualityLimits(), DriftThresholds())
    monitor.watch("m", "1", ["a", "b"], "probabilities", profile=None)
    quality = monitor.get("m", "1")
    assert quality is not None
    quality.drift = DriftResult(0.0, 500, (FeatureDrift("mean area", 0.41, DriftStatus.DRIFT, 0.3, 0.001,
                                                        DriftStatus.DRIFT, (0.5, 0.5)),
                                           FeatureDrift("radius", 0.05, DriftStatus.NO_DRIFT, 0.1, 0.5,
                                                        DriftStatus.NO_DRIFT, (0.5, 0.5))),
                                3.0, 0.0123, DriftStatus.POSSIBLE, (0.5, 0.5))
    monitoring = Monitoring(QualitySettings(enabled=False), AlertSettings(), instruments,
                            ModelRepository(Path("/nonexistent")), None, duration_bounds=DURATION_BUCKETS,
                            store_settings=StoreSettings(url="memory"), store=None)
    monitoring.quality = monitor
    features = AlertRule(name="InputDrift", signal="drift_status", op=">=", threshold=2, params={"test": "psi"})
    classes = AlertRule(name="ClassDrift", signal="drift_status", op=">=", threshold=2, params={"test": "chi2"})
    assert monitoring._value_text(features, 2, "m", "1") == "drift; worst PSI 0.41 (mean area)"
    assert monitoring._value_text(classes, 2, "m", "1") == "drift; class mix χ² p 0.0123"
