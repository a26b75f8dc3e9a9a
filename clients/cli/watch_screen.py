"""`vigil watch`: a live terminal dashboard over the Telemetry stream, laid out for the terminal's size (80×24 and up;
see `Dashboard.layout`)."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from datetime import datetime

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.measure import Measurement
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from vigil.clients.cli.watch_parts import (
    ESSENTIAL_COLUMNS,
    EVENT_HISTORY,
    EVENT_STYLES,
    HISTORY,
    MIN_EVENTS,
    MIN_MODEL_ROWS,
    MODEL_COLUMNS,
    OPTIONAL_COLUMNS,
    QUALITY_DRIFT_WIDTH,
    SEVERITY_ORDER,
    SPARK_WIDTHS,
    STATE_STYLES,
    accuracy_cell,
    alert_height,
    alert_line,
    alerts_title,
    drift_status,
    duration,
    fit,
    model_version,
    quality_table,
    rollout_line,
    rollout_tables,
    sparkline,
)
from vigil.protos.vigil.v1 import telemetry_pb2


class Dashboard:
    """Keeps the recent history of the stream and renders it; feed it frames with `update`.

    `render()` fits the console it is printed on: at 80×24 every model version keeps its state, req/s, p99 and
    errors (and a classifier its accuracy and drift status), the alerts firing their count and the most severe, and
    the latest events as many as fit; a larger console adds the sparklines, p50, queue and batch columns, the quality
    and rollout tables, more events and framed panels. `render(fit_height=False)` ignores the console's height and
    shows `events_shown` events (for output printed one frame after another)."""

    def __init__(self, events_shown: int = 8) -> None:
        self.frame = telemetry_pb2.TelemetryFrame()
        self.throughput: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.p99: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=HISTORY))
        self.events: deque[telemetry_pb2.TelemetryEvent] = deque(maxlen=max(events_shown, EVENT_HISTORY))
        self.events_shown = events_shown
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

    def render(self, *, fit_height: bool = True) -> Screen:
        """The screen, laid out when printed for the console's width (and height, unless `fit_height` is false)."""
        return Screen(self, fit_height)

    def header(self, width: int) -> Text:
        """The server's line: its state, uptime, CPU, memory, calls in flight, subscribers and frames, shortened and
        then thinned (subscribers first) to fit `width`."""
        frame, server = self.frame, self.frame.server
        state = Text.assemble(("vigil ", "bold"), (server.state or "–", STATE_STYLES.get(server.state, "")))
        if frame.member:  # one member of a fleet
            state.append(f" member {frame.member}")
        elif len(frame.members) > 1:
            state.append(f" fleet of {len(frame.members)}")
        full = Text.assemble(
            state, f"   up {frame.uptime_seconds:,.0f} s   CPU {server.cpu_percent:.0f}%   "
            f"memory {server.memory_bytes / 2**20:,.0f} MiB   in flight {server.in_flight}   "
            f"subscribers {server.subscribers}   frames {self.frames} (dropped {frame.dropped_frames})")
        if full.cell_len <= width:
            return full
        dropped = f" ({frame.dropped_frames:,} dropped)" if frame.dropped_frames else ""
        pieces = [f"up {duration(frame.uptime_seconds)}", f"CPU {server.cpu_percent:.0f}%",
                  f"{server.memory_bytes / 2**20:,.0f} MiB", f"frame {self.frames:,}{dropped}",
                  f"in flight {server.in_flight}", f"{server.subscribers} watching"]
        while pieces:
            line = Text("  ").join([state, *(Text(p) for p in pieces)])
            if line.cell_len <= width:
                return line
            pieces.pop()
        return fit(state, width)

    def models_table(self, width: int, console: Console, options: ConsoleOptions, *, quality_columns: bool,
                     rows: int | None = None) -> Table:
        """Per model version: state, req/s, p99 and errors, with (as `width` allows) sparklines of req/s and p99,
        p50, queue depth and batch size; with `quality_columns`, a classifier's accuracy and drift status. `rows`
        limits the rows: the versions with alerts, not ready, with errors, with traffic or classifiers are listed
        first, and a last row counts the rest."""
        essential = ESSENTIAL_COLUMNS + (("accuracy", "drift") if quality_columns else ())
        attempts = [(essential + OPTIONAL_COLUMNS[:n], spark, False) for n in range(len(OPTIONAL_COLUMNS), 0, -1)
                    for spark in (SPARK_WIDTHS if {"throughput", "p99 trend"} & set(OPTIONAL_COLUMNS[:n]) else
                                  SPARK_WIDTHS[:1])]
        attempts += [(essential, HISTORY, False), (essential, HISTORY, True)]
        for columns, spark, short in attempts:
            table = self._models_table(columns, spark, rows, short=short)
            if _natural_width(console, options, table) <= width:
                return table
        table = self._models_table(essential, HISTORY, rows, short=True, tight=True)
        if _natural_width(console, options, table) > width:  # narrower still: long model names are cut
            names = max([len("model"), *(cell_len(m.model) for m in self.frame.models)])
            table.columns[0].max_width = max(6, width - (_natural_width(console, options, table) - names))
        return table

    def _models_table(self, columns: Sequence[str], spark: int, rows: int | None, *, short: bool = False,
                      tight: bool = False) -> Table:
        """`short`: the narrow headers; `tight`: columns one space apart, no vertical rules."""
        shown = [key for key in MODEL_COLUMNS if key in columns]
        table = (Table(expand=True, show_edge=False, pad_edge=False, box=box.SIMPLE_HEAD, padding=0) if tight
                 else Table(expand=True, show_edge=False, pad_edge=False))
        for key in shown:
            header, abbreviated, justify = MODEL_COLUMNS[key]
            table.add_column(abbreviated if short else header, justify=justify,  # type: ignore[arg-type]
                             no_wrap=True, overflow="ellipsis",
                             min_width=spark if key in ("throughput", "p99 trend") else None)
        models = list(self.frame.models)
        listed = models
        if rows is not None and rows < len(models):  # the versions that need a look first
            alerting = {(a.model, a.version) for a in self.frame.alerts}
            ranked = sorted(range(len(models)), key=lambda i: (
                (models[i].model, models[i].version) not in alerting and (models[i].model, "") not in alerting,
                models[i].state in ("READY", "SERVING"), not sum(models[i].errors.values()),
                not models[i].requests_per_second, not models[i].HasField("quality")))
            listed = [models[i] for i in sorted(ranked[:max(rows - 1, 0)])]
        for model in listed:
            key = f"{model.model}:{model.version}"
            errors = sum(model.errors.values())
            cells: dict[str, str | Text] = {
                "model": model.model, "ver": model.version + (" *" if model.is_default else ""),
                "state": Text(model.state, STATE_STYLES.get(model.state, "")),
                "req/s": f"{model.requests_per_second:,.1f}",
                "throughput": sparkline(list(self.throughput[key])[-spark:]),
                "p50": f"{model.request_latency.p50_ms:.2f}", "p99": f"{model.request_latency.p99_ms:.2f}",
                "p99 trend": sparkline(list(self.p99[key])[-spark:]),
                "errors": Text(f"{errors:,}", "red" if errors else ""), "queue": str(model.queue_depth),
                "batch": f"{model.batch_size.mean:.1f}"}
            if model.HasField("quality"):
                cells["accuracy"], cells["drift"] = accuracy_cell(model.quality), drift_status(model.quality.drift)
            table.add_row(*(cells.get(key, "") for key in shown))
        if len(listed) < len(models):
            table.add_row(Text(f"+{len(models) - len(listed)} more", "dim"))
        return table

    def event_lines(self) -> list[Text]:
        """The events, newest first, then the alerts already firing when this viewer connected."""
        lines = [Text(_describe(e), EVENT_STYLES.get(telemetry_pb2.TelemetryEvent.Kind.Name(e.kind), ""))
                 for e in reversed(self.events)]
        return lines + [Text(line, EVENT_STYLES.get("ALERT_FIRED", "")) for line in self.firing_at_connect]

    def layout(self, console: Console, options: ConsoleOptions, height: int | None) -> list[RenderableType]:
        """The parts of the screen for `options.max_width` columns and `height` lines (None: as many as it takes).

        What must stay comes first: the header, a row per model version, a line per firing alert and MIN_EVENTS
        events, each section titled on one line; a short screen lists fewer events (down to one), then fewer versions
        (down to MIN_MODEL_ROWS; a row counts the rest), then fewer alerts (down to the most severe; the title keeps
        the count), then fewer versions still. What is left goes, in turn, to a line per rollout, the
        quality table (in place of the accuracy and drift columns), the rollout tables (in place of their lines),
        a second line for each alert that had to be cut, more events, and panels around the alerts and events."""
        width = options.max_width
        frame = self.frame
        alerts = sorted(frame.alerts, key=lambda a: (SEVERITY_ORDER.get(a.severity, 3), a.since_unix_nanos, a.name))
        events = self.event_lines()
        if height is None:
            events = events[:self.events_shown] + events[len(self.events):]
        quality = quality_table(frame.models)
        if quality is not None:
            quality.columns[-1].max_width = QUALITY_DRIFT_WIDTH
            spare = width - _natural_width(console, options, quality)
            quality.columns[-1].max_width = QUALITY_DRIFT_WIDTH + spare  # the drift column alone is cut
            quality = quality if spare >= 0 else None
        full_rollouts: list[Table] | None = rollout_tables(frame.rollouts)
        if full_rollouts and any(_natural_width(console, options, t) > width for t in full_rollouts):
            full_rollouts = None
        rollouts_height = (sum(_height(console, options, t) for t in full_rollouts) if full_rollouts is not None
                           else 0)
        quality_height = _height(console, options, quality) if quality is not None else 0

        n_models, n_alerts, n_events = len(frame.models), len(alerts), len(events)
        compact_rollouts, use_quality, use_full_rollouts, panels = True, True, full_rollouts is not None, True
        models, shown_alerts, shown_events = n_models, n_alerts, n_events
        unfolded = set(range(n_alerts))  # the alerts that may take two lines
        if height is not None:
            shown_events = min(n_events, MIN_EVENTS)

            def needed() -> int:
                return 1 + 2 + models + (models < n_models) + 1 + max(shown_alerts, 1) + 1 + max(shown_events, 1)

            over = needed() - height
            for shrink, least in (("events", 1), ("models", MIN_MODEL_ROWS), ("alerts", 1), ("models", 1)):
                if over <= 0:
                    break
                if shrink == "events":
                    shown_events -= min(over, max(shown_events - least, 0))
                elif shrink == "alerts":
                    shown_alerts -= min(over, max(shown_alerts - least, 0))
                else:  # the versions left out are counted on a row of their own
                    rows = models + (models < n_models)
                    if max(rows - over - 1, least) + 1 < rows:
                        models = max(rows - over - 1, least)
                over = needed() - height
            left = max(height - needed(), 0)  # below it, the terminal cuts the screen
            compact_rollouts = len(frame.rollouts) <= left
            left -= len(frame.rollouts) if compact_rollouts else 0
            use_quality = quality is not None and quality_height <= left
            left -= quality_height if use_quality else 0
            extra = rollouts_height - len(frame.rollouts)
            use_full_rollouts = full_rollouts is not None and compact_rollouts and extra <= left
            left -= extra if use_full_rollouts else 0

            def fill(inner: int, left: int) -> tuple[set[int], int, int]:
                """The alerts given a second line (a cut one, most severe first), the events added, the lines left."""
                unfolded = set()
                for i, alert in enumerate(alerts[:shown_alerts]):
                    if left >= 1 and alert_height(alert, inner, console) > 1:
                        unfolded.add(i)
                        left -= 1
                more = min(n_events - shown_events, left)
                return unfolded, more, left - more

            unfolded, more, rest = fill(width - 4, left)
            panels = rest >= 2
            if not panels:
                unfolded, more, rest = fill(width, left)
            shown_events += more
        use_quality = use_quality and quality is not None

        parts: list[RenderableType] = [self.header(width)]
        parts.append(self.models_table(width, console, options, quality_columns=not use_quality and any(
            m.HasField("quality") for m in frame.models), rows=models + (models < n_models)))
        if use_quality and quality is not None:
            parts.append(quality)
        if use_full_rollouts and full_rollouts is not None:
            parts.extend(full_rollouts)
        elif compact_rollouts:
            parts.extend(rollout_line(r, width) for r in frame.rollouts)
        inner = width - 4 if panels else width
        alert_title = alerts_title(alerts, shown_alerts)
        alert_body = (Text("\n").join(alert_line(a, inner, lines=2 if i in unfolded else 1, console=console)
                                      for i, a in enumerate(alerts[:shown_alerts])) if alerts
                      else Text("none", "dim"))
        event_body = (Text("\n").join(fit(line, inner) for line in events[:shown_events]) if events
                      else Text("none yet", "dim"))
        for title, body in ((alert_title, alert_body), (Text("recent events"), event_body)):
            if panels:
                parts.append(Panel(body, title=title, title_align="left"))
            else:
                title.stylize("bold")
                parts.extend([Rule(title, align="left", style="dim"), body])
        return parts


class Screen:
    """A dashboard laid out when it is printed, for the console's size then."""

    def __init__(self, dashboard: Dashboard, fit_height: bool = True) -> None:
        self.dashboard = dashboard
        self.fit_height = fit_height

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = (options.height or options.max_height) if self.fit_height else None
        yield Group(*self.dashboard.layout(console, options, height))


def _natural_width(console: Console, options: ConsoleOptions, renderable: Table) -> int:
    """The cells `renderable` takes when nothing is cut."""
    return Measurement.get(console, options.update_width(10_000), renderable).maximum


def _height(console: Console, options: ConsoleOptions, renderable: RenderableType) -> int:
    return len(console.render_lines(renderable, options, pad=False))


def _describe(event: telemetry_pb2.TelemetryEvent) -> str:
    when = datetime.fromtimestamp(event.timestamp_unix_nanos / 1e9).strftime("%H:%M:%S")
    kind = telemetry_pb2.TelemetryEvent.Kind.Name(event.kind)
    target = model_version(event.model, event.version)
    message = event.message.replace(f"{target}: ", "", 1) if target else event.message  # an alert's summary names it
    parts = [kind, event.model, f"v{event.version}" if event.version else "", message]
    return f"{when}  " + " · ".join(p for p in parts if p)


def watch(frames: Iterable[telemetry_pb2.TelemetryFrame], console: Console, *, limit: int = 0) -> int:
    """Show frames as they come (redrawn in place on a terminal, fitted to its size; printed one after another
    otherwise); returns how many were shown. `limit` stops after that many (0: until the stream ends)."""
    dashboard = Dashboard()
    if not console.is_terminal:
        for frame in frames:
            dashboard.update(frame)
            console.print(dashboard.render(fit_height=False))
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
    target = model_version(alert.model, alert.version)
    return f"{when}  ALERT_FIRED · {alert.name}" + (f" · {target}" if target else "") + " (before you connected)"
