"""Prometheus rules mirror the server's default alerts and pass their promtool unit tests; Alertmanager routes them."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES_DIR = DEPLOY / "prometheus"
RULES = RULES_DIR / "rules.yml"
RULES_TEST = RULES_DIR / "rules_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager.yml"
COMPOSE = DEPLOY / "docker-compose.yml"

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool comes from Debian's prometheus package, which `make test` installs")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool comes from Debian's prometheus-alertmanager package, which `make test` installs")
needs_alertmanager = pytest.mark.skipif(
    ALERTMANAGER is None,
    reason="prometheus-alertmanager comes from Debian's package of that name, which `make test` installs")

# The server's default alert rules, as its contract: name -> (severity, `for`, threshold comparison in the expr).
SERVER_DEFAULT_ALERTS: dict[str, tuple[str, str, str]] = {
    "VigilHighErrorRatio": ("critical", "5m", "> 0.05"),
    "VigilHighLatencyP99": ("warning", "5m", "> 0.5"),
    "VigilQueueBacklog": ("warning", "2m", "> 500"),
    "VigilInputDrift": ("warning", "10m", ">= 2"),
    "VigilPredictionDrift": ("warning", "10m", ">= 2"),
    "VigilLowAccuracy": ("critical", "10m", "< 0.9"),
    "VigilLowExpectedAccuracy": ("warning", "10m", "< 0.9"),
    "VigilErrorBudgetFastBurn": ("critical", "2m", "> 14.4"),
    "VigilErrorBudgetSlowBurn": ("warning", "15m", "> 6"),
    "VigilModelNotReady": ("warning", "5m", "== 0"),
    "VigilCanaryRolledBack": ("warning", "0m", "> 0"),
    "VigilStoreDroppingPredictions": ("critical", "0m", "> 0"),
}

PER_INSTANCE_ALERTS = {"VigilStoreDroppingPredictions"}

# Alertmanager receiver per severity label; alerts without one go to the default receiver.
RECEIVERS = {"critical": "pager", "warning": "chat", "info": "email", None: "default"}
RECEIVER_KINDS = {"pager": "pagerduty_configs", "chat": "slack_configs", "email": "email_configs"}

TIMEOUT = 60


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recordings() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)


def compose_rules_mount() -> PurePosixPath:
    """Where the compose stack mounts deploy/prometheus/ inside the Prometheus container."""
    for volume in load(COMPOSE)["services"]["prometheus"]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.rstrip("/") == "./prometheus":
            return PurePosixPath(target)
    raise AssertionError("docker-compose.yml does not mount ./prometheus into the prometheus service")


def prometheus_config_with_local_rules(directory: Path) -> Path:
    """A copy of deploy/prometheus.yml whose rule_files name the repository's files instead of the container's."""
    config = load(PROMETHEUS_CONFIG)
    mount = compose_rules_mount()
    config["rule_files"] = [str(RULES_DIR / PurePosixPath(path).relative_to(mount)) for path in config["rule_files"]]
    copy = directory / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return copy


def test_alerts_mirror_the_server_defaults() -> None:
    found = alerts()
    assert set(found) == set(SERVER_DEFAULT_ALERTS)
    for name, (severity, hold, threshold) in SERVER_DEFAULT_ALERTS.items():
        rule = found[name]
        assert rule["labels"]["severity"] == severity, name
        assert rule["for"] == hold, name
        assert threshold in rule["expr"], f"{name}: {rule['expr']!r} lacks {threshold!r}"
        assert {"summary", "description"} <= set(rule["annotations"]), name
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        # per-model alerts name the model; the store's is per server instance
        assert ("{{ $labels.instance }}" if name in PER_INSTANCE_ALERTS else "{{ $labels.model }}") in text, name


def test_recording_rules_are_named_level_metric_operations() -> None:
    names = [rule["record"] for rule in rules() if "record" in rule]
    assert len(names) == len(set(names))
    for name in names:
        level, metric, operations = name.split(":")
        assert level and metric.startswith("vigil_") and operations, name
    assert {"model_version:vigil_request_errors:ratio_rate5m", "model_version:vigil_request_duration_seconds:p99_5m",
            "model:vigil_slo_availability_errors:ratio_rate1h"} <= set(names)


def test_only_server_side_failures_spend_the_availability_budget() -> None:
    for name, expr in recordings().items():
        if name.startswith("model:vigil_slo_availability_errors:"):
            assert 'code=~"UNAVAILABLE|INTERNAL|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|UNKNOWN|DATA_LOSS"' in expr, name
    assert 'code!="OK"' in recordings()["model_version:vigil_request_errors:rate5m"]


def test_unit_tests_cover_every_alert_and_recording_rule() -> None:
    suite = load(RULES_TEST)
    assert suite["rule_files"] == [RULES.name]
    cases = [case for test in suite["tests"] for case in test.get("alert_rule_test", [])]
    exprs = " ".join(case["expr"] for test in suite["tests"] for case in test.get("promql_expr_test", []))
    read = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", exprs))
    for name in alerts():
        outcomes = [bool(case.get("exp_alerts")) for case in cases if case["alertname"] == name]
        assert True in outcomes, f"no case where {name} fires"
        assert False in outcomes, f"no case where {name} stays quiet"
    for name in recordings():
        assert name in read, f"no promql_expr_test reads {name}"


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = run(str(PROMTOOL), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = run(str(PROMTOOL), "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_prometheus_loads_the_mounted_rules_and_sends_alerts_to_alertmanager(tmp_path: Path) -> None:
    config = load(PROMETHEUS_CONFIG)
    assert config["rule_files"] == [str(compose_rules_mount() / RULES.name)]
    targets = [t for am in config["alerting"]["alertmanagers"] for c in am["static_configs"] for t in c["targets"]]
    port = load(COMPOSE)["services"]["alertmanager"]["ports"][0].split(":")[-1]
    assert targets == [f"alertmanager:{port}"]
    result = run(str(PROMTOOL), "check", "config", str(prometheus_config_with_local_rules(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_compose_runs_alertmanager_for_prometheus() -> None:
    services = load(COMPOSE)["services"]
    alertmanager = services["alertmanager"]
    assert alertmanager["image"].startswith("prom/alertmanager:")
    assert "./alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in alertmanager["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    assert "9093:9093" in alertmanager["ports"]
    assert "alertmanager" in services["prometheus"]["depends_on"]


def test_alertmanager_receivers_match_their_severity() -> None:
    config = load(ALERTMANAGER_CONFIG)
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert config["route"]["receiver"] == RECEIVERS[None]
    assert config["route"]["group_by"] == ["alertname", "model", "version"]
    for name, kind in RECEIVER_KINDS.items():
        assert receivers[name].get(kind), f"receiver {name} has no {kind}"


@needs_amtool
def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run(str(AMTOOL), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_amtool
@pytest.mark.parametrize("severity", list(RECEIVERS))
def test_alerts_route_by_severity(severity: str | None) -> None:
    labels = ["alertname=VigilTest", "model=iris", "version=1"] + ([f"severity={severity}"] if severity else [])
    result = run(str(AMTOOL), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == RECEIVERS[severity]


@needs_amtool
@pytest.mark.parametrize("name", list(SERVER_DEFAULT_ALERTS))
def test_every_alert_reaches_the_receiver_for_its_severity(name: str) -> None:
    severity = alerts()[name]["labels"]["severity"]
    result = run(str(AMTOOL), "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
                 f"--verify.receivers={RECEIVERS[severity]}", f"alertname={name}", f"severity={severity}",
                 "model=iris", "version=1")
    assert result.returncode == 0, result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def api(port: int, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v2/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


@needs_alertmanager
def test_alertmanager_inhibits_the_slow_burn_while_the_fast_burn_fires(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(ALERTMANAGER), f"--config.file={ALERTMANAGER_CONFIG}", f"--storage.path={tmp_path}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sent = [
        {"alertname": "VigilErrorBudgetFastBurn", "severity": "critical", "model": "iris"},
        {"alertname": "VigilErrorBudgetSlowBurn", "severity": "warning", "model": "iris"},
        {"alertname": "VigilErrorBudgetSlowBurn", "severity": "warning", "model": "wine"},
        {"alertname": "VigilLowAccuracy", "severity": "critical", "model": "iris", "version": "1"},
        {"alertname": "VigilInputDrift", "severity": "warning", "model": "iris", "version": "1"},
    ]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                api(port, "alerts", [{"labels": labels} for labels in sent])
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "Alertmanager did not start"
                time.sleep(0.2)
        while True:
            states = {(a["labels"]["alertname"], a["labels"]["model"]): a["status"]["state"]
                      for a in api(port, "alerts")}
            if len(states) == len(sent) and "unprocessed" not in states.values() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)
    assert states == {
        ("VigilErrorBudgetFastBurn", "iris"): "active",
        ("VigilErrorBudgetSlowBurn", "iris"): "suppressed",
        ("VigilErrorBudgetSlowBurn", "wine"): "active",
        ("VigilLowAccuracy", "iris"): "active",
        ("VigilInputDrift", "iris"): "active",
    }
