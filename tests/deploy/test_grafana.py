"""The provisioned Grafana dashboard queries only metrics the server really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import numpy as np
import yaml

from clients import AsyncClient
from telemetry.prometheus import prometheus_name
from tests.conftest import running_app

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "vigil.json"
GPU_SOURCE = Path(__file__).resolve().parents[2] / "telemetry" / "gpu.py"
REFERENCE_SCALE = np.asarray(
    [14, 19, 92, 655, 0.1, 0.1, 0.09, 0.05, 0.18, 0.06, 0.4, 1.2, 2.9, 40, 0.007, 0.025, 0.03, 0.01, 0.02, 0.004,
     16, 25, 107, 880, 0.13, 0.25, 0.27, 0.11, 0.29, 0.08], np.float32)
"""Roughly the bundled model's feature means, so the drift check sees plausible rows."""


def queried_metrics() -> set[str]:
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    assert exprs and all("{" in e for e in exprs), "every query selects its series with a label matcher"
    return {name for e in exprs for name in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", e)}


def gpu_metrics() -> set[str]:
    """The GPU gauges (exported only where NVML finds a GPU), by their Prometheus names."""
    declared = re.findall(r'instruments\.observe\("([\w.]+)", "([^"]*)"', GPU_SOURCE.read_text())
    assert len(declared) == 4
    return {prometheus_name(name, unit, counter=False) for name, unit in declared}


async def test_every_dashboard_query_names_an_exported_metric(model_repo: Path) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        # traffic that makes every quality gauge appear: classifier predictions with feedback, enough rows for a
        # drift check, and an evaluation of the alert rules (SLO gauges)
        assert app.monitoring is not None and app.monitoring.quality is not None and app.monitoring.alerts
        app.monitoring.alerts.evaluate()  # SLO budgets count from the first evaluation
        rows = np.random.default_rng(0).normal(1.0, 0.1, (120, 30)).astype(np.float32) * REFERENCE_SCALE
        await client.predict("breast_cancer", rows)
        prediction = await client.predict("classifier", np.eye(3, dtype=np.float32))
        await client.feedback(prediction.request_id, ["red", "green", "green"])
        app.monitoring.quality.process()
        app.monitoring.quality.check_drift()
        app.monitoring.alerts.evaluate()
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{app.http_port}/metrics") as r:
            page = await r.text()
    exported = {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line and not line.startswith("#")}
    missing = queried_metrics() - exported - gpu_metrics() - {"up"}  # `up` is Prometheus's own
    assert not missing, f"the dashboard queries metrics /metrics does not have: {sorted(missing)}"
    assert {"vigil_requests_total", "vigil_request_duration_seconds_bucket", "vigil_queue_depth",
            "vigil_predictions_total", "vigil_accuracy", "vigil_drift_psi", "vigil_slo_burn_rate",
            "vigil_alerts_firing"} <= queried_metrics()


def test_dashboard_is_provisioned_from_the_folder_compose_mounts() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"]
    sources = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text())
    uids = {s["uid"] for s in sources["datasources"]}
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} <= uids
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert f"./grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]
