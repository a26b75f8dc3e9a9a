"""The pieces `vigil watch` builds its screen from: class-mix bars, sparklines, cells, the quality and rollout
tables, alert lines, and the text helpers they share."""


from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from rich.console import Console
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
                "ROLLOUT_ROLLED_BACK": "red", "ROLLOUT_PROMOTED": "green", "WORKER_RESTARTED": "yellow"}
MIX_CLASSES = 5
"""Classes shown in a class mix; the rest are counted on one line."""
LABEL_WIDTH = 12
TOP_FEATURES = 3


ROLE_STYLES = {"stable": "green", "canary": "yellow", "shadow": "cyan", "variant": ""}
PHASE_STYLES = {"rolled_back": "bold red", "promoted": "green", "promoting": "yellow", "canary": "yellow"}


MODEL_COLUMNS: dict[str, tuple[str, str, str]] = {
    "model": ("model", "model", "left"), "ver": ("ver", "ver", "left"), "state": ("state", "state", "left"),
    "req/s": ("req/s", "req/s", "right"), "throughput": ("throughput", "throughput", "left"),
    "p50": ("p50 ms", "p50 ms", "right"), "p99": ("p99 ms", "p99 ms", "right"),
    "p99 trend": ("p99 trend", "p99 trend", "left"),
    "errors": ("errors", "err", "right"), "queue": ("queue", "queue", "right"), "batch": ("batch", "batch", "right"),
    "accuracy": ("accuracy", "acc", "right"), "drift": ("drift", "drift", "left")}
"""The model table's columns, in their order on screen: header, header on a narrow screen, justification."""
ESSENTIAL_COLUMNS = ("model", "ver", "state", "req/s", "p99", "errors")
OPTIONAL_COLUMNS = ("throughput", "p99 trend", "p50", "queue", "batch")
"""Shown as the width allows, most wanted first: a narrow screen drops them from the end."""
SPARK_WIDTHS = (HISTORY, 15, 8)
"""Sparkline lengths tried, longest first, before a column is dropped."""
MIN_EVENTS = 5
"""Events listed before the quality and rollout tables are given room; more fill what is left."""
MIN_MODEL_ROWS = 5
"""Versions listed on a short screen before the alerts listed are cut to one."""
EVENT_HISTORY = 200
"""Events kept, for a tall screen."""
QUALITY_DRIFT_WIDTH = 16
"""The least width of the quality table's drift column for the table to be shown (its feature names are cut)."""




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


def sparkline(values: Sequence[float]) -> str:
    """Values as a row of block characters, scaled to their own maximum."""
    top = max(values, default=0.0)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(int(v / top * (len(BARS) - 1) + 0.5), len(BARS) - 1)] for v in values)


def alerts_title(alerts: Sequence[telemetry_pb2.Alert], shown: int | None = None) -> Text:
    """`alerts firing (N)`, with how many of each severity (the most severe first) and how many are listed when
    not all."""
    title = Text(f"alerts firing ({len(alerts)})")
    counts: dict[str, int] = {}
    for alert in alerts:
        counts[alert.severity or "–"] = counts.get(alert.severity or "–", 0) + 1
    if counts:
        title.append(" · ")
        ranked = sorted(counts.items(), key=lambda kv: SEVERITY_ORDER.get(kv[0], 3))
        title.append_text(Text(", ").join(Text(f"{n} {severity}", SEVERITY_STYLES.get(severity, ""))
                                          for severity, n in ranked))
    if shown is not None and shown < len(alerts):
        title.append(f" · {shown} shown", "dim")
    return title


def alert_line(alert: telemetry_pb2.Alert, width: int | None = None, *, lines: int = 1,
               console: Console | None = None) -> Text:
    """Severity (coloured), rule, model version, summary (without the model version it repeats), value and start.
    Past `width` the value and start are left out; if the rest is still too long, it wraps onto at most `lines` lines
    (given the `console`) under the rule's name, and what does not fit is cut."""
    target = model_version(alert.model, alert.version)
    summary = alert.summary.removeprefix(f"{target}: ") if target else alert.summary  # said once, in front
    since = (f" · since {datetime.fromtimestamp(alert.since_unix_nanos / 1e9):%H:%M:%S}"
             if alert.since_unix_nanos else "")
    severity = Text(f"{alert.severity or '–':<8} ", SEVERITY_STYLES.get(alert.severity, ""))
    body = Text.assemble((alert.name, "bold"), f"  {target}  " if target else "  ", summary)
    tail = Text(f"  (value {alert.value_text or format(alert.value, '.4g')}{since})", "dim")
    if width is None or severity.cell_len + body.cell_len + tail.cell_len <= width:
        return severity + body + tail
    room = width - severity.cell_len
    if lines > 1 and console is not None and room >= 20 and body.cell_len > room:
        for candidate in (body + tail, body):
            wrapped = [row.copy() for row in candidate.wrap(console, room)]
            for row in wrapped:
                row.rstrip()
            if len(wrapped) <= lines:
                break
        rows = wrapped[:lines - 1] + [fit(Text(" ").join(wrapped[lines - 1:]), room)]
        return Text("\n").join([severity + rows[0], *(Text(" " * severity.cell_len) + row for row in rows[1:])])
    return fit(severity + body, width)


def alert_height(alert: telemetry_pb2.Alert, width: int, console: Console, most: int = 2) -> int:
    """The lines `alert_line` takes at `width`, up to `most`."""
    return len(alert_line(alert, width, lines=most, console=console).split())


def accuracy_cell(quality: telemetry_pb2.QualityTelemetry) -> Text:
    """Accuracy over the recent labelled rows, or else the label-free estimate marked `~`."""
    if quality.recent.HasField("accuracy"):
        return Text(_percent(quality.recent.accuracy))
    if quality.HasField("expected_accuracy"):
        return Text("~" + _percent(quality.expected_accuracy), "dim")
    return Text("–", "dim")


def drift_status(drift: telemetry_pb2.DriftTelemetry) -> Text:
    if not drift.has_reference:
        return Text("no profile", "dim")
    if not drift.status:
        return Text("not checked", "dim")
    return Text(drift.status.replace("_", " "), DRIFT_STYLES.get(drift.status, ""))


def rollout_line(rollout: telemetry_pb2.RolloutTelemetry, width: int) -> Text:
    """A rollout on one line: its phase, each version's role and share, and the versions over a guard margin."""
    line = Text.assemble(("rollout ", "bold"), (rollout.model, "bold"), " · ",
                         (rollout.phase.replace("_", " "), PHASE_STYLES.get(rollout.phase, "")))
    for v in rollout.versions:
        share = f"{v.weight:.0f}%" if v.role != "shadow" else "copy"
        line.append_text(Text.assemble(" · ", f"v{v.version} ", (v.role, ROLE_STYLES.get(v.role, "")), f" {share}"))
    over = [f"v{v.version}" for v in rollout.versions if v.breaches]
    if over:
        line.append(f" · {', '.join(over)} over its guard", "red")
    return fit(line, width)


def fit(text: Text, width: int) -> Text:
    """`text` on one line of at most `width` cells, cut with an ellipsis."""
    text = text.copy()
    text.no_wrap = True
    text.truncate(max(width, 1), overflow="ellipsis")
    return text


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def model_version(model: str, version: str) -> str:
    return " ".join(p for p in (model, f"v{version}" if version else "") if p)


