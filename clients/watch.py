"""`vigil watch`: a live terminal dashboard over the Telemetry stream."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from datetime import datetime

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from protos.vigil.v1 import telemetry_pb2

BARS = "▁▂▃▄▅▆▇█"
HISTORY = 30
STATE_STYLES = {"READY": "green", "SERVING": "green", "FAILED": "red", "LOADING": "yellow", "STARTING": "yellow",
                "DRAINING": "yellow", "UNLOADED": "dim"}
SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
DRIFT_STYLES = {"no_drift": "green", "possible_drift": "yellow", "drift": "bold red"}


def class_mix(counts: dict[str, int], width: int = 10) -> Text:
    """Each label's share of the rows as a short bar: `benign ███████░░░ 70%`."""
    total = sum(counts.values())
    text = Text()
    for label, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        share = n / total if total else 0.0
        filled = round(share * width)
        if text:
            text.append("  ")
        text.append(f"{label} ").append("█" * filled, "cyan").append("░" * (width - filled), "dim")
        text.append(f" {share:.0%}")
    return text


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def quality_table(models: Iterable[telemetry_pb2.ModelTelemetry]) -> Table | None:
    """Per classifier version: class mix, mean confidence, accuracy beside expected accuracy, drift; None when no
    model reports quality."""
    rows = [m for m in models if m.HasField("quality")]
    if not rows:
        return None
    table = Table(expand=True, show_edge=False, pad_edge=False, title="quality", title_justify="left")
    for column in ("model", "ver", "class mix (total)", "confidence", "accuracy", "expected", "drift",
                   "top features (PSI)"):
        table.add_column(column, no_wrap=column != "class mix (total)")
    for model in rows:
        q = model.quality
        counts = dict(q.predictions) if sum(q.predictions.values()) else dict(q.predictions_total)
        mix = class_mix(counts) if counts else Text("no predictions", "dim")
        drift = q.drift
        if not drift.has_reference:
            status, top = Text("no profile", "dim"), ""
        elif not drift.status:
            status, top = Text("not checked yet", "dim"), ""
        else:
            status = Text(drift.status.replace("_", " "), DRIFT_STYLES.get(drift.status, ""))
            worst = sorted(drift.features, key=lambda f: -f.psi)[:3]
            top = ", ".join(f"{f.feature} {f.psi:.2f}" for f in worst)
        accuracy = q.recent.accuracy if q.recent.HasField("accuracy") else None
        expected = q.expected_accuracy if q.HasField("expected_accuracy") else None
        confidence = q.confidence.mean if sum(q.confidence.counts) else None
        table.add_row(model.model, model.version, mix, "–" if confidence is None else f"{confidence:.3f}",
                      f"{_percent(accuracy)} ({q.recent.rows})", _percent(expected), status, top)
    return table


def sparkline(values: Sequence[float]) -> str:
    """Values as a row of block characters, scaled to their own maximum."""
    top = max(values, default=0.0)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(int(v / top * (len(BARS) - 1) + 0.5), len(BARS) - 1)] for v in values)


class Dashboard:
    """Keeps the recent history of the stream and renders it; feed it frames with `update`."""

    def __init__(self, events_shown: int = 8) -> None:
        self.frame = telemetry_pb2.TelemetryFrame()
        self.throughput: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.p99: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.events: deque[telemetry_pb2.TelemetryEvent] = deque(maxlen=events_shown)
        self.frames = 0

    def update(self, frame: telemetry_pb2.TelemetryFrame) -> None:
        self.frame = frame
        self.frames += 1
        for model in frame.models:
            key = f"{model.model}:{model.version}"
            self.throughput[key].append(model.requests_per_second)
            self.p99[key].append(model.request_latency.p99_ms)
        self.events.extend(frame.events)

    def render(self) -> Group:
        frame = self.frame
        server = frame.server
        header = Text.assemble(
            ("vigil ", "bold"), (server.state or "–", STATE_STYLES.get(server.state, "")),
            f"   up {frame.uptime_seconds:,.0f} s   CPU {server.cpu_percent:.0f}%   "
            f"memory {server.memory_bytes / 2**20:,.0f} MiB   in flight {server.in_flight}   "
            f"subscribers {server.subscribers}   frames {self.frames} (dropped {frame.dropped_frames})")
        table = Table(expand=True, show_edge=False, pad_edge=False)
        for column, justify in (("model", "left"), ("ver", "left"), ("state", "left"), ("req/s", "right"),
                                ("throughput", "left"), ("p50 ms", "right"), ("p99 ms", "right"),
                                ("p99 trend", "left"), ("errors", "right"), ("queue", "right"),
                                ("batch", "right")):
            table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for model in frame.models:
            key = f"{model.model}:{model.version}"
            errors = sum(model.errors.values())
            table.add_row(
                model.model, model.version + (" *" if model.is_default else ""),
                Text(model.state, STATE_STYLES.get(model.state, "")), f"{model.requests_per_second:,.1f}",
                sparkline(self.throughput[key]), f"{model.request_latency.p50_ms:.2f}",
                f"{model.request_latency.p99_ms:.2f}", sparkline(self.p99[key]),
                Text(str(errors), "red" if errors else ""), str(model.queue_depth), f"{model.batch_size.mean:.1f}")
        alerts = Text("\n").join(
            Text(f"{a.severity:<8} {a.name} {a.model} {a.summary}", SEVERITY_STYLES.get(a.severity, ""))
            for a in frame.alerts) if frame.alerts else Text("none", "dim")
        events = Text("\n").join(Text(_describe(e)) for e in reversed(self.events)) if self.events \
            else Text("none yet", "dim")
        quality = quality_table(frame.models)
        parts: list[Text | Table | Panel] = [header, table, *([quality] if quality is not None else []),
                 Panel(alerts, title="alerts firing", title_align="left"),
                 Panel(events, title="recent events", title_align="left")]
        return Group(*parts)


def _describe(event: telemetry_pb2.TelemetryEvent) -> str:
    when = datetime.fromtimestamp(event.timestamp_unix_nanos / 1e9).strftime("%H:%M:%S")
    kind = telemetry_pb2.TelemetryEvent.Kind.Name(event.kind)
    parts = [kind, event.model, f"v{event.version}" if event.version else "", event.message]
    return f"{when}  " + " · ".join(p for p in parts if p)


def watch(frames: Iterable[telemetry_pb2.TelemetryFrame], console: Console, *, limit: int = 0) -> int:
    """Show frames as they come (redrawn in place on a terminal, printed one after another otherwise); returns how
    many were shown. `limit` stops after that many (0: until the stream ends)."""
    dashboard = Dashboard()
    if not console.is_terminal:
        for frame in frames:
            dashboard.update(frame)
            console.print(dashboard.render())
            if limit and dashboard.frames >= limit:
                break
        return dashboard.frames
    with Live(dashboard.render(), console=console, auto_refresh=False, screen=False) as live:
        for frame in frames:
            dashboard.update(frame)
            live.update(dashboard.render(), refresh=True)
            if limit and dashboard.frames >= limit:
                break
    return dashboard.frames
