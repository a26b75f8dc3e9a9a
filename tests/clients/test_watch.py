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
