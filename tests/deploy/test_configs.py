"""The collector config, the compose stack and the Prometheus config hang together, and promtool accepts them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_rules import prometheus_config_with_local_rules

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool comes from Debian's prometheus package, which `make test` installs")


def check_queries(queries: dict[str, str], folder: Path) -> None:
    """promtool parses every PromQL expression (name → expression), written as recording rules."""
    path = folder / "queries.yml"
    rules = [{"record": name, "expr": expr} for name, expr in queries.items()]
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_every_pipeline_component_of_the_collector_is_defined() -> None:
    config = load(ROOT / "otel-collector.yaml")
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    check_collector_pipelines(config)
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "prometheus" in pipelines["metrics"]["exporters"]
    jaeger = [e for e in pipelines["traces"]["exporters"] if e.startswith("otlp")]
    assert jaeger and config["exporters"][jaeger[0]]["endpoint"].startswith("jaeger:")


def check_collector_pipelines(config: dict[str, Any]) -> None:
    """Every component a collector pipeline names is defined, memory_limiter comes first and batch is there;
    every extension in use is defined."""
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name} pipeline names undefined {kind[:-1]} {component}"
        assert pipeline["processors"][0] == "memory_limiter", f"{name}: memory_limiter must come first"
        assert "batch" in pipeline["processors"]
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]


def test_compose_stack_wires_vigil_to_the_collector_and_prometheus_to_both() -> None:
    compose = load(ROOT / "deploy" / "docker-compose.yml")
    services = compose["services"]
    assert {"vigil", "otel-collector", "prometheus", "jaeger", "grafana"} <= set(services)
    assert services["vigil"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    named = set(compose.get("volumes") or {})
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:  # a named volume: compose creates it
                continue
            assert (ROOT / "deploy" / source).resolve().exists(), f"mounted {source} is missing"
    collector = load(ROOT / "otel-collector.yaml")
    prometheus = load(ROOT / "deploy" / "prometheus.yml")
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    exporter_port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert targets == {"vigil:8002", f"otel-collector:{exporter_port}"}


@needs_promtool
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    # rule_files name the container's mount; the copy names the repository's rule files instead.
    config = prometheus_config_with_local_rules(tmp_path)
    result = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
