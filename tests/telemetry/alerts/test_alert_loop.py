"""Alert rules inside a real server: the lifecycle on a controllable clock, the events and alerts in the Telemetry
stream, the log, /metrics, and a real Alertmanager receiving the firing alert and its resolution."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.conftest import running_app
from tests.deploy.test_rules import SERVER_DEFAULT_ALERTS
from tests.telemetry.alerts.test_alertmanager import (
    ALERTMANAGER,
    Receiver,
    alertmanager_process,
    wait_ready,
    wait_until,
)
from vigil.clients import AsyncClient, InvalidInput
from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.app import App
from vigil.server.settings import DEFAULT_ALERT_RULES, AlertRuleSettings, AlertSettings, Settings
from vigil.telemetry.alerts.engine import TransitionKind

RULE = AlertRuleSettings(name="TooManyErrors", signal="error_ratio", op=">", threshold=0.2, for_seconds=60,
                         severity="critical", summary="{model} v{version}: error ratio {value}",
                         labels={"team": "ml"}, params={"window": "5m"})
Kind = telemetry_pb2.TelemetryEvent.Kind


def settings(**extra: Any) -> AlertSettings:
    """Only RULE, evaluated when the test says (the loop's own interval is an hour)."""
    return AlertSettings(rules=[RULE], interval_seconds=3600, **extra)


def good() -> np.ndarray:
    return np.zeros((1, 30), np.float32)


async def bad_calls(client: AsyncClient, n: int) -> None:
    for _ in range(n):
        with pytest.raises(InvalidInput):
            await client.predict("breast_cancer", np.zeros((1, 29), np.float32))


def loop_of(app: App) -> Any:
    assert app.monitoring is not None and app.monitoring.alerts is not None
    return app.monitoring.alerts


async def test_an_alert_goes_pending_fires_and_resolves_on_the_rule_clock(
        model_repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_app(model_repo, alerts=settings()) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as c:
        loop = loop_of(app)
        t0 = time.time()
        stream = c.telemetry(interval_ms=100, models=["breast_cancer"], sections=["events", "alerts"])
        await anext(stream)
        loop.evaluate(now=t0 - 600)  # a baseline reading ten minutes "ago": the window starts from it
        await c.predict("breast_cancer", good())
        await bad_calls(c, 3)  # 3 of 4 calls failed: 0.75 > 0.2
        assert loop.evaluate(now=t0) == [] and [a.rule.name for a in loop.engine.pending()] == ["TooManyErrors"]
        assert loop.evaluate(now=t0 + 30) == []  # held for 30 s of the 60 required
        with caplog.at_level(logging.WARNING, logger="vigil.telemetry.alerts.loop"):
            [fired] = loop.evaluate(now=t0 + 61)
        assert fired.kind is TransitionKind.FIRED and fired.alert.value == pytest.approx(0.75)
        assert fired.alert.label_dict == {"alertname": "TooManyErrors", "severity": "critical", "team": "ml",
                                          "model": "breast_cancer", "version": "1"}
        events, alerts = [], []
        async for frame in stream:
            events += [e for e in frame.events if e.kind in (Kind.ALERT_FIRED, Kind.ALERT_RESOLVED)]
            alerts = list(frame.alerts)
            if events and alerts:
                break
        assert [e.kind for e in events] == [Kind.ALERT_FIRED] and "TooManyErrors (critical)" in events[0].message
        assert alerts[0].name == "TooManyErrors" and alerts[0].summary == "breast_cancer v1: error ratio 75.0%"
        assert alerts[0].since_unix_nanos == int((t0 + 61) * 1e9)
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{app.http_port}/metrics") as response:
            page = await response.text()
        assert 'vigil_alerts_firing{alertname="TooManyErrors",severity="critical"} 1.0' in page
        record = next(r for r in caplog.records if r.name == "vigil.telemetry.alerts.loop")
        assert record.getMessage() == "alert TooManyErrors firing: breast_cancer v1: error ratio 75.0%"
        # the window moves past the failures: the last five minutes hold only good calls
        for _ in range(5):
            await c.predict("breast_cancer", good())
        [resolved] = await evaluated(loop, t0 + 400)
        assert resolved.kind is TransitionKind.RESOLVED and resolved.alert.value == 0.0
        async for frame in stream:
            if any(e.kind == Kind.ALERT_RESOLVED for e in frame.events):
                assert not frame.alerts
                break
        await stream.aclose()


@pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager comes from Debian's package, which "
                                                 "`make test` installs")
async def test_a_real_alertmanager_gets_the_servers_alert_and_its_resolution(model_repo: Path, tmp_path: Path
                                                                              ) -> None:
    hook = Receiver()
    await hook.start()
    try:
        with alertmanager_process(tmp_path, hook.port) as (process, url, log_path):
            await wait_ready(process, url, log_path)
            async with running_app(model_repo, alerts=settings(alertmanager_url=url)) as app, \
                    AsyncClient(f"127.0.0.1:{app.grpc_port}") as c:
                loop = loop_of(app)
                t0 = time.time() - 1000  # rule times in the past: Alertmanager resolves an alert once endsAt passed
                loop.evaluate(now=t0 - 600)
                await bad_calls(c, 2)
                loop.evaluate(now=t0 - 70)
                [fired] = loop.evaluate(now=t0)
                assert fired.kind is TransitionKind.FIRED

                def statuses() -> list[str]:
                    return [body["status"] for _, body in hook.requests
                            if any(a["labels"].get("alertname") == "TooManyErrors" for a in body["alerts"])]

                await wait_until(lambda: "firing" in statuses(), "the firing notification", timeout=30)
                firing = next(body for _, body in hook.requests if body["status"] == "firing")
                labels = firing["alerts"][0]["labels"]
                assert labels == {"alertname": "TooManyErrors", "severity": "critical", "team": "ml",
                                  "model": "breast_cancer", "version": "1"}
                assert firing["alerts"][0]["annotations"]["summary"] == "breast_cancer v1: error ratio 100.0%"
                await c.predict("breast_cancer", good())
                [resolved] = await evaluated(loop, t0 + 400)
                assert resolved.kind is TransitionKind.RESOLVED
                await wait_until(lambda: "resolved" in statuses(), "the resolved notification", timeout=30)
    finally:
        await hook.stop()


def test_the_default_rules_are_the_prometheus_rules() -> None:
    assert {r.name for r in DEFAULT_ALERT_RULES} == set(SERVER_DEFAULT_ALERTS)
    for rule in DEFAULT_ALERT_RULES:
        severity, hold, threshold = SERVER_DEFAULT_ALERTS[rule.name]
        assert rule.severity == severity and rule.for_seconds == float(hold.rstrip("m")) * 60, rule.name
        op, value = threshold.split()
        assert rule.op == op and rule.threshold == float(value), rule.name


def test_alert_settings_are_checked_and_read_from_the_config_file(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="watches SLO 'nope', which is not defined"):
        AlertSettings(rules=[AlertRuleSettings(name="Burn", signal="error_budget_burn", threshold=1,
                                               params={"slo": "nope"})])
    with pytest.raises(ValueError, match="repeated: TooManyErrors"):
        AlertSettings(rules=[RULE, RULE])
    config = tmp_path / "vigil.toml"
    config.write_text('grpc_port = 9100\n[alerts]\nalertmanager_url = "http://am:9093"\n[[alerts.rules]]\n'
                      'name = "Slow"\nsignal = "latency"\nthreshold = 0.2\nparams = { quantile = "0.9" }\n')
    monkeypatch.setenv("VIGIL_CONFIG_FILE", str(config))
    monkeypatch.setenv("VIGIL_GRPC_PORT", "9200")
    loaded = Settings()
    assert loaded.grpc_port == 9200  # the environment wins over the file
    assert loaded.alerts.alertmanager_url == "http://am:9093"
    assert [(r.name, r.signal, r.params) for r in loaded.alerts.rules] == [("Slow", "latency", {"quantile": "0.9"})]
    monkeypatch.setenv("VIGIL_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="names no readable file"):
        Settings()


async def evaluated(loop: Any, now: float, seconds: float = 5.0) -> list[Any]:
    """The transitions of evaluating at `now`, once there are any: a call is counted as its handler ends, a moment
    after its caller has the answer, so the first evaluation may not see it yet."""
    deadline = time.monotonic() + seconds
    while not (transitions := loop.evaluate(now=now)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return transitions
