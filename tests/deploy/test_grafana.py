"""The provisioned Grafana dashboard queries only metrics the server really exports."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml
from sklearn.datasets import load_breast_cancer

from tests.conftest import build_repository, running_app
from tests.deploy.test_configs import check_queries, needs_promtool
from vigil.clients import AsyncClient, Rollout
from vigil.telemetry.export.prometheus import prometheus_name
from vigil.telemetry.metrics.instruments import GPU_METRICS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "vigil.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s"}
"""Values for the variables Grafana fills in, so promtool can parse the queries."""


def panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def row(title: str) -> list[dict[str, Any]]:
    """The panels under the row of that title."""
    ordered = sorted(panels(), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    start = next(i for i, p in enumerate(ordered) if p["type"] == "row" and p["title"] == title)
    rest = ordered[start + 1:]
    return rest[:next((i for i, p in enumerate(rest) if p["type"] == "row"), len(rest))]


def queried_metrics() -> set[str]:
    exprs = [t["expr"] for p in panels() for t in p.get("targets", [])]
    assert exprs and all("{" in e for e in exprs), "every query selects its series with a label matcher"
    return {name for e in exprs for name in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", e)}


def gpu_metrics() -> set[str]:
    """The GPU gauges (exported only where NVML finds a GPU), by their Prometheus names."""
    declared = [(metric.name, metric.unit) for metric in GPU_METRICS]
    assert len(declared) == 4
    return {prometheus_name(name, unit, counter=False) for name, unit in declared}


async def test_every_dashboard_query_names_an_exported_metric(tmp_path: Path) -> None:
    repository = build_repository(tmp_path / "models")
    shutil.copytree(repository / "classifier" / "1", repository / "classifier" / "2")  # a shadow for the rollout row
    async with running_app(repository) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        # traffic that makes every quality gauge appear: classifier predictions with feedback, enough rows for a
        # drift check, and an evaluation of the alert rules (SLO gauges)
        assert app.monitoring is not None and app.monitoring.quality is not None and app.monitoring.alerts
        app.monitoring.alerts.evaluate()  # SLO budgets count from the first evaluation
        await client.predict("breast_cancer", load_breast_cancer().data[:120].astype(np.float32))
        await client.set_rollout("classifier", Rollout(weights={1: 100}, shadow_version=2))
        prediction = await client.predict("classifier", np.eye(3, dtype=np.float32))
        await client.feedback(prediction.request_id, ["red", "green", "green"])
        await app.dataplane.close()  # the shadow copy has run
        app.monitoring.quality.process()
        app.monitoring.quality.check_drift()
        app.monitoring.alerts.evaluate()
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{app.http_port}/metrics") as r:
            page = await r.text()
    exported = {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line and not line.startswith("#")}
    missing = queried_metrics() - exported - gpu_metrics() - {"up"}  # `up` is Prometheus's own
    assert not missing, f"the dashboard queries metrics /metrics does not have: {sorted(missing)}"
    assert {"vigil_requests_total", "vigil_request_duration_seconds_bucket", "vigil_queue_depth"} <= queried_metrics()


def test_the_quality_and_slo_rows_query_what_the_quality_monitor_exports() -> None:
    quality = {p["title"]: [t["expr"] for t in p["targets"]] for p in row("Model quality")}
    assert any("vigil_predictions_total" in e and "by (model, class)" in e for e in quality["Predictions by class"])
    assert [e.split(",")[0] for e in quality["Confidence p50 / p10"]] == ["histogram_quantile(0.5",
                                                                           "histogram_quantile(0.1"]
    assert all("vigil_prediction_confidence_bucket" in e for e in quality["Confidence p50 / p10"])
    assert {e.split("{")[0] for e in quality["Accuracy and expected accuracy"]} == {"vigil_accuracy",
                                                                                   "vigil_accuracy_expected"}
    assert quality["Drift: top 5 features by PSI"] == ['topk by (model, version) (5, vigil_drift_psi{job="vigil"})']
    tables = {p["title"]: p for p in panels() if p["type"] == "table"}
    for title, metric in (("Drift status by feature and test", "vigil_drift_status"),
                          ("Alerts firing now", "vigil_alerts_firing")):
        target = tables[title]["targets"][0]
        assert metric in target["expr"] and target["instant"] and target["format"] == "table"
    slos = {t["expr"].split("{")[0] for p in row("SLOs and alerts") for t in p["targets"]}
    assert {"vigil_slo_error_budget_remaining", "vigil_slo_burn_rate", "vigil_alerts_firing"} <= slos


@needs_promtool
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    queries = {}
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"panel_{panel['id']}_{target['refId']}"] = expr
    check_queries(queries, tmp_path)


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


def test_the_rollout_row_shows_versions_side_by_side() -> None:
    rollouts = {p["title"]: [t["expr"] for t in p["targets"]] for p in row("Rollouts")}
    assert rollouts["Rollout shares"] == ['vigil_rollout_weight_percent{job="vigil"}']
    assert all("by (model, version)" in e for e in rollouts["Error ratio by version"] + rollouts["Shadow agreement"])
    assert "by (le, model, version)" in rollouts["p99 latency by version"][0]
    assert 'outcome="agree"' in rollouts["Shadow agreement"][0]
    assert rollouts["Rolled back now"] == ['vigil_rollout_rolled_back{job="vigil"} > 0']
