"""The terminal dashboard's rendering, from frames built by hand."""

from __future__ import annotations

from rich.console import Console

from clients.watch import Dashboard, sparkline
from protos.vigil.v1 import telemetry_pb2


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
    q.confidence.CopyFrom(telemetry_pb2.Distribution(bounds=[0.5, 1.0], counts=[0, 10, 0], mean=0.912))
    q.recent.CopyFrom(telemetry_pb2.AccuracyWindow(rows=40, accuracy=0.875))
    q.expected_accuracy = 0.93
    drift = q.drift
    drift.has_reference, drift.status = True, "drift"
    drift.features.extend([telemetry_pb2.FeatureDrift(feature=f"f{i}", psi=psi) for i, psi in
                           enumerate([0.02, 0.4, 0.11, 0.3])])
    return model


def test_quality_shows_class_mix_accuracy_beside_the_estimate_and_the_worst_features() -> None:
    dashboard = Dashboard()
    update = frame(10, 5.0)
    update.models.append(quality_model())
    unprofiled = update.models.add(model="other", version="1", state="READY")
    unprofiled.quality.predictions_total.update({"red": 5})
    dashboard.update(update)
    console = Console(width=160, record=True)
    console.print(dashboard.render())
    text = console.export_text()
    assert "benign ███████░░░ 70%" in text and "malignant ███░░░░░░░ 30%" in text
    assert "0.912" in text and "87.5% (40)" in text and "93.0%" in text
    assert "drift" in text and "f1 0.40, f3 0.30, f2 0.11" in text
    assert "red ██████████ 100%" in text and "no profile" in text  # totals when the interval had none


def test_no_quality_table_without_classifiers() -> None:
    console = Console(width=160, record=True)
    dashboard = Dashboard()
    dashboard.update(frame(1, 1.0))
    console.print(dashboard.render())
    assert "class mix" not in console.export_text()
