"""The terminal dashboard's rendering, from frames built by hand."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from rich.cells import cell_len
from rich.console import Console
from sklearn.datasets import load_breast_cancer

from tests.conftest import running_app
from vigil.clients import AsyncClient
from vigil.clients.cli.watch_parts import alert_line, class_mix, sparkline
from vigil.clients.cli.watch_screen import Dashboard, watch
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
    lines = screen(dashboard, 80, 24)  # a first terminal: the versions with their accuracy and drift status
    assert len(lines) <= 24 and max(cell_len(line) for line in lines) <= 80, "\n".join(lines)
    assert row(lines, "breast_cancer")[-1] == drift.status.replace("_", " ")
    assert row(lines, "classifier")[-2:] == ["66.7%", "no profile"] and "alerts firing (0)" in "\n".join(lines)


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


T0 = 1_700_000_000 * 10**9
"""A start time for alerts and events (Unix nanoseconds)."""


def first_hour(frames: int = 6) -> list[telemetry_pb2.TelemetryFrame]:
    """Frames as the bundled breast_cancer classifier and a second classifier give them in a first hour: traffic,
    accuracy, drift on breast_cancer's features, the shipped alert rules firing, and a few events."""
    kind = telemetry_pb2.TelemetryEvent.Kind
    features = list(load_breast_cancer().feature_names)
    events = [telemetry_pb2.TelemetryEvent(kind=kind.MODEL_LOADED, model="breast_cancer", version="1"),
              telemetry_pb2.TelemetryEvent(kind=kind.MODEL_LOADED, model="classifier", version="3"),
              telemetry_pb2.TelemetryEvent(kind=kind.DEFAULT_VERSION_CHANGED, model="classifier", version="3",
                                           message="requests without a version now go to version 3"),
              telemetry_pb2.TelemetryEvent(kind=kind.ALERT_FIRED, model="breast_cancer", version="1",
                                           message="VigilHighLatencyP99 (warning): breast_cancer v1: p99 latency "
                                                   "0.61 s over 5 minutes"),
              telemetry_pb2.TelemetryEvent(kind=kind.ALERT_RESOLVED, model="breast_cancer", version="1",
                                           message="VigilHighLatencyP99 (warning): breast_cancer v1: p99 latency "
                                                   "0.21 s over 5 minutes"),
              telemetry_pb2.TelemetryEvent(kind=kind.ALERT_FIRED, model="breast_cancer", version="1",
                                           message="VigilQueueBacklog (warning): breast_cancer v1: 612 requests "
                                                   "queued"),
              telemetry_pb2.TelemetryEvent(kind=kind.MODEL_LOADED, model="classifier", version="3",
                                           message="reloaded from changed files")]
    for i, event in enumerate(events):
        event.timestamp_unix_nanos, event.sequence = T0 + (i + 1) * 60 * 10**9, i + 1
    alerts = [telemetry_pb2.Alert(name="VigilInputDrift", severity="warning", model="breast_cancer", version="1",
                                  summary="breast_cancer v1: input features drift from the reference", value=2,
                                  since_unix_nanos=T0),
              telemetry_pb2.Alert(name="VigilErrorBudgetFastBurn", severity="critical", model="classifier",
                                  summary="classifier: the availability error budget burns 20.5x too fast",
                                  value=20.5, since_unix_nanos=T0 + 60 * 10**9),
              telemetry_pb2.Alert(name="VigilLowAccuracy", severity="critical", model="breast_cancer", version="1",
                                  summary="breast_cancer v1: accuracy 0.8525 over the recent labelled rows",
                                  value=0.8525, since_unix_nanos=T0 + 120 * 10**9)]
    out = []
    for i in range(frames):
        update = telemetry_pb2.TelemetryFrame(uptime_seconds=3600 + i, interval_ms=1000, sequence=i + 1,
                                              alerts=alerts, events=events[:2] if i == 0 else events[i + 1:i + 2])
        update.server.CopyFrom(telemetry_pb2.ServerTelemetry(state="SERVING", cpu_percent=12.5, in_flight=3,
                                                             memory_bytes=412 * 2**20, subscribers=1))
        cancer = update.models.add(model="breast_cancer", version="1", state="READY", is_default=True,
                                   requests_per_second=20.5 * (i + 1), queue_depth=2)
        cancer.request_latency.p50_ms, cancer.request_latency.p99_ms = 1.23, 8.5 + i
        cancer.errors["INVALID_ARGUMENT"] = 3
        cancer.batch_size.mean = 4.2
        q = cancer.quality
        q.predictions.update({"benign": 75, "malignant": 45})
        q.predictions_total.update({"benign": 9000, "malignant": 5400})
        q.confidence.CopyFrom(telemetry_pb2.Distribution(bounds=[0.5, 1.0], counts=[0, 120, 0], mean=0.947))
        q.recent.CopyFrom(telemetry_pb2.AccuracyWindow(rows=1200, accuracy=0.8525))
        q.expected_accuracy, q.expected_accuracy_rows = 0.912, 14400
        q.drift.has_reference, q.drift.status = True, "drift"
        q.drift.features.extend([
            telemetry_pb2.FeatureDrift(feature=name, psi=0.01 * j, psi_status="drift" if j > 20 else "no_drift")
            for j, name in enumerate(features)])
        second = update.models.add(model="classifier", version="3", state="READY", is_default=True,
                                   requests_per_second=8.0)
        second.request_latency.p50_ms, second.request_latency.p99_ms = 0.5, 2.25
        second.quality.predictions_total.update({"red": 10, "green": 20, "blue": 5})
        second.quality.expected_accuracy = 0.71
        out.append(update)
    return out


def screen(dashboard: Dashboard, width: int, height: int) -> list[str]:
    """The dashboard's lines in a console of that size."""
    console = Console(file=io.StringIO(), width=width, height=height, record=True)
    console.print(dashboard.render())
    return console.export_text().splitlines()


def row(lines: list[str], model: str) -> list[str]:
    """The cells of the model table's row for `model`."""
    line = next(line for line in lines if line.split() and line.split()[0] == model)
    return [cell.strip() for cell in line.split("│")]


def first_hour_screen(width: int, height: int) -> list[str]:
    """The screen after the first hour's frames, checked to fit `width` × `height`."""
    dashboard = Dashboard()
    for update in first_hour():
        dashboard.update(update)
    lines = screen(dashboard, width, height)
    assert len(lines) <= height and max(cell_len(line) for line in lines) <= width, "\n".join(lines)
    return lines


def test_the_screen_fits_80_by_24_and_keeps_what_matters() -> None:
    lines = first_hour_screen(80, 24)
    text = "\n".join(lines)
    assert text.startswith("vigil SERVING") and "frame 6" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["model", "┃"])
    assert [cell.strip() for cell in lines[header].split("┃")] == ["model", "ver", "state", "req/s", "p99 ms",
                                                                  "errors", "accuracy", "drift"]
    assert row(lines, "breast_cancer") == ["breast_cancer", "1 *", "READY", "123.0", "13.50", "3", "85.2%", "drift"]
    assert row(lines, "classifier") == ["classifier", "3 *", "READY", "8.0", "2.25", "0", "~71.0%", "no profile"]
    assert "…" not in "".join(lines[header:header + 4])  # no cell cut
    # the alerts: their count, the most severe first, each rule's model version said once
    assert "alerts firing (3) · 2 critical, 1 warning" in text
    alerts = [line.strip("│ ") for line in lines if line.strip("│ ").startswith(("critical", "warning"))]
    assert [line.split()[:3] for line in alerts] == [["critical", "VigilErrorBudgetFastBurn", "classifier"],
                                                     ["critical", "VigilLowAccuracy", "breast_cancer"],
                                                     ["warning", "VigilInputDrift", "breast_cancer"]]
    assert "breast_cancer v1: " not in text and "classifier: the" not in text
    # the latest events first, as many as fit: here all of them, and the alerts firing before this viewer connected
    assert "recent events" in text
    newest = next(i for i, line in enumerate(lines) if "MODEL_LOADED · classifier · v3 · reloaded" in line)
    assert "ALERT_FIRED · breast_cancer · v1 · VigilQueueBacklog (warning): 612 r" in lines[newest + 1]
    assert text.count("MODEL_LOADED") == 3 and text.count("DEFAULT_VERSION_CHANGED") == 1
    assert text.count("(before you conn") == 3
    assert "class mix" not in text and "throughput" not in text  # what a larger screen adds


def test_a_short_screen_keeps_the_models_the_worst_alert_and_the_latest_event() -> None:
    lines = first_hour_screen(80, 10)
    text = "\n".join(lines)
    assert row(lines, "breast_cancer")[:3] == ["breast_cancer", "1 *", "READY"] and "no profile" in text
    assert "alerts firing (3) · 2 critical, 1 warning · 2 shown" in text
    assert "critical VigilErrorBudgetFastBurn  classifier" in text and "VigilInputDrift " not in text
    assert "MODEL_LOADED · classifier · v3 · reloaded from changed files" in text
    assert "VigilQueueBacklog" not in text  # older events give way


def test_many_models_on_a_small_screen_list_those_that_need_a_look_and_count_the_rest() -> None:
    update = first_hour(1)[0]
    watched = list(update.models)
    del update.models[:]
    update.models.extend([telemetry_pb2.ModelTelemetry(model=f"idle{i:02}", version="1", state="READY")
                          for i in range(30)])
    update.models.extend(watched)  # listed after the idle ones, and with alerts
    update.models.add(model="broken", version="2", state="FAILED")
    update.models.add(model="busy", version="1", state="READY", requests_per_second=3.5)
    dashboard = Dashboard()
    dashboard.update(update)
    lines = screen(dashboard, 80, 24)
    assert len(lines) <= 24 and max(cell_len(line) for line in lines) <= 80, "\n".join(lines)
    assert row(lines, "breast_cancer")[-2:] == ["85.2%", "drift"] and row(lines, "classifier")[2] == "READY"
    assert row(lines, "broken")[2] == "FAILED" and row(lines, "busy")[3] == "3.5"
    listed = [line.split()[0] for line in lines if line.split() and line.split()[0].startswith("idle")]
    assert listed == sorted(listed) and listed[0] == "idle00"  # in the server's order
    more = row(lines, next(line.split()[0] for line in lines if line.split() and line.split()[0].startswith("+")))
    assert more[0] == f"+{30 - len(listed)} more"
    text = "\n".join(lines)  # versions give way before alerts do
    assert "alerts firing (3) · 2 critical, 1 warning" in text and " shown" not in text
    assert "warning  VigilInputDrift" in text and "MODEL_LOADED" in text


def test_a_larger_screen_shows_more() -> None:
    dashboard = Dashboard()
    for update in first_hour():
        dashboard.update(update)
    small, lines = screen(dashboard, 80, 24), screen(dashboard, 160, 48)
    assert len(small) < len(lines) <= 48 and max(cell_len(line) for line in lines) <= 160, "\n".join(lines)
    text = "\n".join(lines)
    assert "frames 6 (dropped 0)" in lines[0] and "subscribers 1" in lines[0]
    header = next(line for line in lines if line.split()[:2] == ["model", "┃"])
    assert [cell.strip() for cell in header.split("┃")] == ["model", "ver", "state", "req/s", "throughput", "p50 ms",
                                                            "p99 ms", "p99 trend", "errors", "queue", "batch"]
    cells, history = row(lines, "breast_cancer"), [update.models[0] for update in first_hour()]
    assert cells[4] == sparkline([m.requests_per_second for m in history]) == "▂▃▅▆▇█"
    assert cells[7] == sparkline([m.request_latency.p99_ms for m in history]) and cells[-2:] == ["2", "4.2"]
    # the quality table: class mix, confidence, accuracy beside the estimate, the features of highest PSI
    assert "benign    ██████░░░░  62% 75" in text and "malignant ████░░░░░░  38% 45" in text
    assert "0.947" in text and "1,200 labelled" in text and "91.2%" in text
    assert "0.29 worst fractal dimension" in text and "0.28 worst symmetry" in text
    assert "(value 20.5 · since " in text and "alerts firing (3) · 2 critical, 1 warning" in text
    assert text.count("MODEL_LOADED") == 3 and text.count("(before you connected)") == 3
    assert "╭─ alerts firing" in text and "╭─ recent events" in text


def test_on_a_terminal_each_frame_fits_it_and_piped_output_is_whole() -> None:
    for height, cut in ((24, False), (8, True)):  # 8 lines are too few for the versions, an alert and an event
        terminal = Console(file=io.StringIO(), force_terminal=True, force_interactive=True, width=80, height=height,
                           color_system=None)
        assert watch(first_hour(), terminal, limit=6) == 6
        # Live cuts a screen taller than the terminal, and says so on a last line of `...`
        assert bool(re.search(r"^ +\.\.\. +", terminal.file.getvalue(), re.MULTILINE)) is cut
    piped = Console(file=io.StringIO(), width=160, height=24)
    watch(first_hour(), piped)
    last = piped.file.getvalue().split("vigil SERVING")[-1].splitlines()
    assert len(last) > 24 and "class mix" in "\n".join(last) and "frames 6 (dropped 0)" in last[0]


def test_an_alert_shows_its_value_as_the_server_formats_it() -> None:
    alert = telemetry_pb2.Alert(name="VigilLowAccuracy", severity="critical", model="clf", version="2",
                                summary="clf v2: accuracy 83.9% over the recent labelled rows", value=0.839,
                                signal="accuracy", value_text="83.9%")
    line = alert_line(alert).plain
    assert "accuracy 83.9% over the recent labelled rows  (value 83.9%" in line and "clf v2: " not in line
    assert "(value 0.839" in alert_line(telemetry_pb2.Alert(name="Old", value=0.839)).plain  # an older server's
