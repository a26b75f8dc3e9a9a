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
        return Group(header, table, Panel(alerts, title="alerts firing", title_align="left"),
                     Panel(events, title="recent events", title_align="left"))


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
