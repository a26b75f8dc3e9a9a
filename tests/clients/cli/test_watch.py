"""The terminal dashboard's rendering, from frames built by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from sklearn.datasets import load_breast_cancer

from tests.conftest import running_app
from vigil.clients import AsyncClient
from vigil.clients.cli.watch_screen import Dashboard, class_mix, sparkline
from vigil.protos.vigil.v1 import telemetry_pb2


def test_sparkline_scales_to_its_maximum() -> None:
    assert sparkline([0, 1, 2, 4, 8]) == "▁▂▃▅█"
    assert sparkline([0, 0]) == "▁▁" and sparkline([]) == ""


def frame(rate: float, p99: float, **extra: object) -> telemetry_pb2.TelemetryFrame:
    model = telemetry_pb2.ModelTelemetry(model="m", version="1", state="READY", requests_per_second=rate,
                                         is_default=True)
    model.request_latency.p99_ms = p99
    model.errors["INVALID_ARGUMENT"] = 2
    return telemetry_pb2.TelemetryFrame(models=[model], server=telemetry_pb2.ServerTelemetry(state="SERVING"),
                                        **extra)  # type: ignore[arg-type]


def test_dashboard_keeps_history_and_shows_alerts_and_events() -> None:
    dashboard = Dashboard()
    kind = telemetry_pb2.TelemetryEvent.Kind
    dashboard.update(frame(10, 5.0, events=[telemetry_pb2.TelemetryEvent(kind=kind.MODEL_LOADED, model="m",
                                                                         version="1")]))
    dashboard.update(frame(40, 20.0, alerts=[telemetry_pb2.Alert(name="p99 high", severity="warning", model="m",
                                                                 summary="p99 over 10 ms")]))
    assert list(dashboard.throughput["m:1"]) == [10, 40] and list(dashboard.p99["m:1"]) == [5.0, 20.0]
    console = Console(width=160, record=True)
    console.print(dashboard.render())
    text = console.export_text()
    assert "m" in text and "1 *" in text and "40.0" in text and "20.00" in text
    assert "p99 high" in text and "MODEL_LOADED" in text and "frames 2" in text


def quality_model() -> telemetry_pb2.ModelTelemetry:
    model = telemetry_pb2.ModelTelemetry(model="clf", version="2", state="READY")
    q = model.quality
    q.predictions.update({"benign": 7, "malignant": 3})
    q.predictions_total.update({"benign": 50, "malignant": 50})
    q.confidence.CopyFrom(telemetry_pb2.Distribution(bounds=[0.5, 1.0], counts=[0, 10, 0], mean=0.912))
    q.recent.CopyFrom(telemetry_pb2.AccuracyWindow(rows=40, accuracy=0.875))
    q.expected_accuracy, q.expected_accuracy_rows = 0.93, 120
    drift = q.drift
    drift.has_reference, drift.status = True, "drift"
    drift.features.extend([telemetry_pb2.FeatureDrift(feature=f"f{i}", psi=psi) for i, psi in
                           enumerate([0.02, 0.4, 0.11, 0.3])])
    return model


def render(dashboard: Dashboard, width: int = 120) -> str:
    console = Console(width=width, record=True)
    console.print(dashboard.render())
    return console.export_text()


def test_class_mix_puts_the_most_frequent_first_and_folds_the_tail() -> None:
    assert class_mix({"b": 1, "a": 3}).plain.splitlines() == ["a ████████░░  75% 3", "b ██░░░░░░░░  25% 1"]
    many = class_mix({f"class{i}": i + 1 for i in range(7)}).plain.splitlines()
    assert len(many) == 6 and many[0].startswith("class6 ") and many[-1] == "+2 more classes"
    assert class_mix({"a_rather_long_label": 1200}).plain == "a_rather_lo… ██████████ 100% 1,200"


def test_quality_shows_class_mix_accuracy_beside_the_estimate_and_the_worst_features() -> None:
    dashboard = Dashboard()
    update = frame(10, 5.0)
    update.models.append(quality_model())
    unprofiled = update.models.add(model="other", version="1", state="READY")
    unprofiled.quality.predictions_total.update({"red": 5})
    dashboard.update(update)
    text = render(dashboard)
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "benign    ███████░░░  70% 7" in text and "malignant ███░░░░░░░  30% 3" in text
    assert "10 rows this interval" in text
    assert "0.912" in text and "87.5%" in text and "40 labelled" in text and "93.0%" in text and "120 rows" in text
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if "benign" in line and "│ drift" in line)
    assert [line.rsplit("│", 1)[1].strip() for line in lines[first + 1:first + 4]] == ["0.40 f1", "0.30 f3",
                                                                                      "0.11 f2"]
    assert "0.02 f0" not in text
    assert "red ██████████ 100% 5" in text and "5 rows since start" in text  # totals when the interval had none
    assert "no profile" in text


def test_quality_before_any_prediction_or_drift_check() -> None:
    dashboard = Dashboard()
    update = frame(1, 1.0)
    model = update.models.add(model="clf", version="1", state="READY")
    model.quality.drift.has_reference = True
    dashboard.update(update)
    text = render(dashboard)
    assert "no predictions" in text and "not checked yet" in text and "0 labelled" in text


def test_no_quality_table_without_classifiers() -> None:
    dashboard = Dashboard()
    dashboard.update(frame(1, 1.0))
    text = render(dashboard)
    assert "class mix" not in text and "alerts firing (0)" in text


def test_alerts_are_listed_most_severe_first() -> None:
    alerts = [telemetry_pb2.Alert(name="LowConfidence", severity="info", model="clf", version="2",
                                  summary="confidence p10 under 0.6", value=0.55),
              telemetry_pb2.Alert(name="ErrorBudgetBurn", severity="critical", model="clf",
                                  summary="burning the budget 14x too fast", value=14.4,
                                  since_unix_nanos=1_700_000_000 * 10**9),
              telemetry_pb2.Alert(name="InputDrift", severity="warning", model="clf", version="2",
                                  summary="3 features drifted", value=2)]
    dashboard = Dashboard()
    dashboard.update(frame(1, 1.0, alerts=alerts))
    text = render(dashboard)
    listed = [line for line in text.splitlines() if "clf" in line and "│" in line and "alerts" not in line
              and "before you connected" not in line]  # the events panel names them too
    assert [line.split()[1] for line in listed] == ["critical", "warning", "info"]
    assert "ErrorBudgetBurn  clf  burning the budget 14x too fast  (value 14.4 · since " in listed[0]
    assert "InputDrift  clf v2  3 features drifted  (value 2)" in listed[1]
    assert "alerts firing (3)" in text


async def test_live_frames_show_the_classifiers_quality_in_120_columns(model_repo: Path) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        assert app.monitoring is not None and app.monitoring.quality is not None
        await client.predict("breast_cancer", load_breast_cancer().data[:150].astype(np.float32))
        prediction = await client.predict("classifier", np.eye(3, dtype=np.float32))
        await client.feedback(prediction.request_id, ["red", "green", "green"])
        app.monitoring.quality.process()
        app.monitoring.quality.check_drift()
        dashboard = Dashboard()
        async for update in client.telemetry(interval_ms=100, models=["breast_cancer", "classifier"]):
            dashboard.update(update)
            quality = {m.model: m.quality for m in update.models}
            if quality["classifier"].recent.HasField("accuracy") and quality["breast_cancer"].drift.status:
                break
    text = render(dashboard)
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "red   ███░░░░░░░  33% 1" in text and "green ███░░░░░░░  33% 1" in text and "3 rows since start" in text
    assert "66.7%" in text and "3 labelled" in text
    assert "benign" in text and "malignant" in text and "150 rows since start" in text
    drift = quality["breast_cancer"].drift
    worst = max(drift.features, key=lambda f: f.psi)
    assert drift.status.replace("_", " ") in text and f"{worst.psi:.2f} {worst.feature}"[:20] in text


def test_rollouts_show_versions_side_by_side_with_breaches_and_agreement() -> None:
    frame = telemetry_pb2.TelemetryFrame()
    rollout = frame.rollouts.add(model="triage", phase="rolled_back", stable="1", window_seconds=300,
                                 reason="canary version 2 rolled back: error ratio 0.3 vs 0 (+0.3 > 0.05)")
    stable = rollout.versions.add(version="1", role="stable", weight=90, requests=900, p50_ms=0.8, p99_ms=2.5,
                                  mean_confidence=0.91, accuracy=0.95, labelled_rows=120, drift_status="no_drift")
    stable.predictions.update({"red": 500, "blue": 400})
    rollout.versions.add(version="2", role="canary", weight=10, requests=100, errors=30, error_ratio=0.3,
                         p50_ms=0.9, p99_ms=3.1, breaches=["error ratio 0.3 vs 0 (+0.3 > 0.05)"])
    rollout.versions.add(version="4", role="shadow", requests=900, agreement=0.875, compared_rows=900)
    dashboard = Dashboard()
    dashboard.update(frame)
    text = render(dashboard)
    assert "rollout triage · rolled back · 300s window" in text
    assert max(len(line) for line in text.splitlines()) <= 120
    lines = {line.split()[0]: line for line in text.splitlines() if line.split() and line.split()[0] in "124"}
    assert "stable" in lines["1"] and "90%" in lines["1"] and "95.0%" in lines["1"] and "0.910" in lines["1"]
    assert "canary" in lines["2"] and "30.0%" in lines["2"]
    assert "v2 exceeds: error ratio 0.3 vs 0 (+0.3 > 0.05)" in text
    assert "shadow" in lines["4"] and "copy" in lines["4"] and "87.5%" in lines["4"]
    assert "canary version 2 rolled back" in text


def test_alerts_already_firing_on_connect_are_in_the_events_and_the_text_names_the_model_once() -> None:
    firing = telemetry_pb2.Alert(name="TooManyErrors", severity="critical", model="clf", version="2",
                                 summary="clf v2: error ratio 0.3", value=0.3,
                                 since_unix_nanos=1_700_000_000 * 10**9)
    dashboard = Dashboard()
    dashboard.update(frame(1, 1.0, alerts=[firing]))
    text = render(dashboard)
    assert "none yet" not in text
    assert "ALERT_FIRED · TooManyErrors · clf v2 (before you connected)" in text
    assert "TooManyErrors  clf v2  error ratio 0.3  (value 0.3" in text and "clf v2: error" not in text
    dashboard.update(frame(1, 1.0, alerts=[firing]))  # later frames add no second line
    assert render(dashboard).count("before you connected") == 1
