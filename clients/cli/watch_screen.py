"""`vigil watch`: a live terminal dashboard over the Telemetry stream."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from vigil.protos.vigil.v1 import telemetry_pb2

BARS = "▁▂▃▄▅▆▇█"
HISTORY = 30
STATE_STYLES = {"READY": "green", "SERVING": "green", "FAILED": "red", "LOADING": "yellow", "STARTING": "yellow",
                "DRAINING": "yellow", "UNLOADED": "dim"}
SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
DRIFT_STYLES = {"no_drift": "green", "possible_drift": "yellow", "drift": "bold red"}
EVENT_STYLES = {"ALERT_FIRED": "red", "ALERT_RESOLVED": "green", "MODEL_FAILED": "red", "SERVER_DRAINING": "yellow",
                "ROLLOUT_ROLLED_BACK": "red", "ROLLOUT_PROMOTED": "green"}
MIX_CLASSES = 5
"""Classes shown in a class mix; the rest are counted on one line."""
LABEL_WIDTH = 12
TOP_FEATURES = 3


def class_mix(counts: Mapping[str, int], width: int = 10) -> Text:
    """One line per label, most frequent first: the label, a bar of its share of the rows, the share and the rows
    (`benign    ███████░░░  70% 7`)."""
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ranked[:MIX_CLASSES]
    pad = max((len(label) for label, _ in shown), default=0)
    digits = max((len(f"{n:,}") for _, n in shown), default=0)
    lines = []
    for label, n in shown:
        share = n / total if total else 0.0
        filled = round(share * width)
        name = label if len(label) <= LABEL_WIDTH else label[:LABEL_WIDTH - 1] + "…"
        lines.append(Text.assemble(f"{name:<{min(pad, LABEL_WIDTH)}} ", ("█" * filled, "cyan"),
                                   ("░" * (width - filled), "dim"), f" {share:>4.0%}",
                                   (f" {n:>{digits},}", "dim")))
    if len(ranked) > len(shown):
        lines.append(Text(f"+{len(ranked) - len(shown)} more classes", "dim"))
    return Text("\n").join(lines)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _mix_cell(quality: telemetry_pb2.QualityTelemetry) -> Text:
    interval = sum(quality.predictions.values())
    counts = quality.predictions if interval else quality.predictions_total
    rows = sum(counts.values())
    if not rows:
        return Text("no predictions", "dim")
    return Text("\n").join([class_mix(counts),
                            Text(f"{rows:,} rows {'this interval' if interval else 'since start'}", "dim")])


def _drift_cell(drift: telemetry_pb2.DriftTelemetry) -> Text:
    if not drift.has_reference:
        return Text("no profile", "dim")
    if not drift.status:
        return Text("not checked yet", "dim")
    lines = [Text(drift.status.replace("_", " "), DRIFT_STYLES.get(drift.status, ""))]
    for feature in sorted(drift.features, key=lambda f: -f.psi)[:TOP_FEATURES]:
        lines.append(Text.assemble((f"{feature.psi:.2f}", DRIFT_STYLES.get(feature.psi_status, "")),
                                   f" {feature.feature}"))
    return Text("\n").join(lines)


def quality_table(models: Iterable[telemetry_pb2.ModelTelemetry]) -> Table | None:
    """Per classifier version: class mix, mean confidence, accuracy beside expected accuracy, drift status with the
    features of highest PSI; None when no model reports quality."""
    rows = [m for m in models if m.HasField("quality")]
    if not rows:
        return None
    table = Table(expand=True, show_edge=False, pad_edge=False, title="quality", title_justify="left")
    table.add_column("model", no_wrap=True, overflow="ellipsis", max_width=20)
    table.add_column("ver", no_wrap=True)
    table.add_column("class mix", no_wrap=True, overflow="ellipsis")
    table.add_column("confidence", justify="right", no_wrap=True)
    table.add_column("accuracy", justify="right", no_wrap=True)
    table.add_column("expected", justify="right", no_wrap=True)
    table.add_column("drift (top PSI)", no_wrap=True, overflow="ellipsis", min_width=16)
    for model in rows:
        q = model.quality
        confidence = f"{q.confidence.mean:.3f}" if sum(q.confidence.counts) else "–"
        accuracy = Text.assemble(_percent(q.recent.accuracy if q.recent.HasField("accuracy") else None),
                                 (f"\n{q.recent.rows:,} labelled", "dim"))
        expected = Text.assemble(_percent(q.expected_accuracy if q.HasField("expected_accuracy") else None),
                                 (f"\n{q.expected_accuracy_rows:,} rows" if q.expected_accuracy_rows else "", "dim"))
        table.add_row(model.model, model.version, _mix_cell(q), confidence, accuracy, expected, _drift_cell(q.drift))
    return table


ROLE_STYLES = {"stable": "green", "canary": "yellow", "shadow": "cyan", "variant": ""}
PHASE_STYLES = {"rolled_back": "bold red", "promoted": "green", "promoting": "yellow", "canary": "yellow"}


def rollout_tables(rollouts: Sequence[telemetry_pb2.RolloutTelemetry]) -> list[Table]:
    """One table per rollout, its versions side by side over the guard's window: role and share, requests, error
    ratio, p99, class mix, confidence, accuracy, drift and shadow agreement; below it, the guard margins each
    version exceeds and why the split last changed."""
    tables = []
    for rollout in rollouts:
        title = Text.assemble(("rollout ", "bold"), (rollout.model, "bold"), " · ",
                              (rollout.phase.replace("_", " "), PHASE_STYLES.get(rollout.phase, "")),
                              (f" · {rollout.window_seconds:g}s window", "dim"))
        notes = [Text(f"v{v.version} exceeds: " + "; ".join(v.breaches), "red") for v in rollout.versions
                 if v.breaches]
        if rollout.reason:
            notes.append(Text(rollout.reason, "dim"))
        table = Table(expand=True, show_edge=False, pad_edge=False, title=title, title_justify="left",
                      caption=Text("\n").join(notes) if notes else None, caption_justify="left")
        for column, justify in (("ver", "left"), ("role", "left"), ("share", "right"), ("requests", "right"),
                                ("errors", "right"), ("p99 ms", "right"), ("class mix", "left"), ("conf", "right"),
                                ("accuracy", "right"), ("drift", "left"), ("agree", "right")):
            table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for v in rollout.versions:
            table.add_row(
                v.version, Text(v.role, ROLE_STYLES.get(v.role, "")),
                f"{v.weight:.0f}%" if v.role != "shadow" else "copy", f"{v.requests:,}",
                Text(f"{v.error_ratio:.1%}", "red" if v.errors else ""), f"{v.p99_ms:.2f}",
                class_mix(v.predictions, width=6) if sum(v.predictions.values()) else Text("–", "dim"),
                f"{v.mean_confidence:.3f}" if v.HasField("mean_confidence") else "–",
                Text.assemble(_percent(v.accuracy if v.HasField("accuracy") else None),
                              (f"\n{v.labelled_rows:,} labelled" if v.labelled_rows else "", "dim")),
                Text(v.drift_status.replace("_", " ") or "–", DRIFT_STYLES.get(v.drift_status, "")),
                _percent(v.agreement if v.HasField("agreement") else None))
        tables.append(table)
    return tables


def alerts_panel(alerts: Sequence[telemetry_pb2.Alert]) -> Panel:
    """Firing alerts, most severe first: severity (coloured), rule, model version, summary, value and start."""
    lines = []
    for alert in sorted(alerts, key=lambda a: (SEVERITY_ORDER.get(a.severity, 3), a.since_unix_nanos, a.name)):
        target = " ".join(p for p in (alert.model, f"v{alert.version}" if alert.version else "") if p)
        summary = alert.summary.removeprefix(f"{target}: ") if target else alert.summary  # said once, in front
        since = (f" · since {datetime.fromtimestamp(alert.since_unix_nanos / 1e9):%H:%M:%S}"
                 if alert.since_unix_nanos else "")
        lines.append(Text.assemble((f"{alert.severity or '–':<8}", SEVERITY_STYLES.get(alert.severity, "")), " ",
                                   (alert.name, "bold"), f"  {target}  " if target else "  ", summary,
                                   (f"  (value {alert.value:.4g}{since})", "dim")))
    body = Text("\n").join(lines) if lines else Text("none", "dim")
    return Panel(body, title=f"alerts firing ({len(lines)})", title_align="left")


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
        self.firing_at_connect: list[str] = []
        """Alerts already firing in the first frame: they fired before this viewer connected, so no event says so."""

    def update(self, frame: telemetry_pb2.TelemetryFrame) -> None:
        self.frame = frame
        self.frames += 1
        if self.frames == 1:
            self.firing_at_connect = [_already_firing(a) for a in frame.alerts]
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
        lines = [Text(_describe(e), EVENT_STYLES.get(telemetry_pb2.TelemetryEvent.Kind.Name(e.kind), ""))
                 for e in reversed(self.events)]
        lines += [Text(line, EVENT_STYLES.get("ALERT_FIRED", "")) for line in self.firing_at_connect]
        events = Text("\n").join(lines) if lines else Text("none yet", "dim")
        quality = quality_table(frame.models)
        parts: list[Text | Table | Panel] = [header, table, *([quality] if quality is not None else []),
                                             *rollout_tables(frame.rollouts),
                                             alerts_panel(frame.alerts),
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


def _already_firing(alert: telemetry_pb2.Alert) -> str:
    when = (datetime.fromtimestamp(alert.since_unix_nanos / 1e9).strftime("%H:%M:%S") if alert.since_unix_nanos
            else "--:--:--")
    target = " ".join(p for p in (alert.model, f"v{alert.version}" if alert.version else "") if p)
    return f"{when}  ALERT_FIRED · {alert.name}" + (f" · {target}" if target else "") + " (before you connected)"
