"""The operator report: `/report?since=24h` (HTML with plots) and `/report.json`, from the server's retained history
of every process of the fleet (totals, errors, latency, throughput, uptime, per-model and per-version usage, class
mix, accuracy, drift, alerts fired) with the drift and accuracy detail of every monitored classifier; `vigil report`
saves either. Also the wiring of the history: its recorder, drift reader and alert listener."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from vigil.server.settings import ReportSettings
from vigil.server.web.drift_report import report as quality_report
from vigil.server.web.report_page import render
from vigil.telemetry.alerts.engine import AlertTransition, TransitionKind
from vigil.telemetry.alerts.watched_values import parse_duration
from vigil.telemetry.history.member_minutes import FiredAlert
from vigil.telemetry.history.minute_store import HistoryUnavailable, MinuteStore
from vigil.telemetry.history.minutes import Key
from vigil.telemetry.history.period import summarize
from vigil.telemetry.history.recorder import HistoryRecorder
from vigil.telemetry.history.report_history import ReportHistory
from vigil.telemetry.metrics.aggregates import Aggregates
from vigil.telemetry.quality.figures import WindowFigures
from vigil.telemetry.quality.monitor import QualityMonitor

logger = logging.getLogger(__name__)

DEFAULT_SINCE = "24h"
SAVE_SECONDS = 5.0
"""On shutdown, how long writing the history's last minutes to the store may take before the server goes on
without them."""


def build_recorder(settings: ReportSettings, aggregates: Aggregates, quality: QualityMonitor | None, *,
                   store: MinuteStore | None = None, member: str = "", purge_interval_seconds: float = 3600.0
                   ) -> HistoryRecorder:
    """The history of this process, written to `store` as `member` (kept in memory only without a store)."""
    history = ReportHistory(aggregates, retention_seconds=settings.retention_days * 86400,
                            drift=drift_reader(quality) if quality is not None else None)
    return HistoryRecorder(history, store=store, member=member, tick_seconds=settings.write_interval_seconds,
                           purge_interval_seconds=purge_interval_seconds)


def drift_reader(monitor: QualityMonitor) -> Callable[[], Mapping[Key, tuple[int, float]]]:
    """The worst status and highest PSI of each version's current drift result."""

    def read() -> dict[Key, tuple[int, float]]:
        return {(q.model, q.version): (int(q.drift.status),
                                       max((f.psi for f in q.drift.features if math.isfinite(f.psi)), default=0.0))
                for q in monitor.versions() if q.drift is not None}

    return read


def alert_listener(history: ReportHistory) -> Callable[[AlertTransition], None]:
    """Records each alert that fires (resolutions are not kept)."""

    def listen(transition: AlertTransition) -> None:
        if transition.kind is not TransitionKind.FIRED:
            return
        alert = transition.alert
        labels = alert.label_dict
        history.record_alert(FiredAlert(alert.rule.name, str(alert.rule.severity), labels.get("model", ""),
                                        labels.get("version", ""), alert.summary,
                                        alert.fired_at if alert.fired_at is not None else history.now()))

    return listen


def parse_since(text: str) -> float:
    """Seconds in a period like 30m, 24h or 7d; ValueError with a message for people otherwise."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise ValueError(f"since must be a period like 30m, 24h or 7d, not {text!r}") from None
    if seconds < 60:
        raise ValueError(f"since must be at least 1m (the history keeps minutes), not {text!r}")
    return seconds


PeriodQuality = Callable[[str, str, float, float], WindowFigures | None]
"""A version's figures from the prediction log for predictions made in [start, end] (blocking), or None."""


async def operator_report(recorder: HistoryRecorder, quality: QualityMonitor | None, *, since: str,
                          model: str | None, period_quality: PeriodQuality | None = None,
                          member: str | None = None) -> dict[str, Any]:
    """The report over the last `since` (clamped to the retention), of every model or only `model`, of the whole
    fleet or only its `member` (the calls, latency and alerts of that process; accuracy stays the fleet's);
    ValueError for a bad `since`, KeyError for a model with no calls in the period that is not monitored.

    The fleet's minutes are read from the store and merged in a worker thread (this process's newest counts are
    taken from its memory on the event loop first); summing up a week of minutes takes a good part of a second, so
    that runs in a worker thread too. When the store cannot be read, the report holds what this process has not
    written to it yet, and says so."""
    requested = parse_since(since)
    history = recorder.history
    seconds = min(requested, history.retention_seconds)
    now = history.now()
    if quality is not None:
        quality.process()  # predictions answered a moment ago may still be queued
    out: dict[str, Any] = {"period": {
        "since": since, "from_unix": now - seconds, "to_unix": now, "seconds": seconds,
        "requested_seconds": requested, "clamped": seconds < requested,
        "retention_seconds": history.retention_seconds, "model": model, "member": member, "bucket_seconds": 60}}
    if seconds < requested:
        out["period"]["note"] = (f"{since} was asked for, but the server keeps {_days(history.retention_seconds)} of "
                                 "history: the report covers that")
    try:
        window = await recorder.window(now - seconds, now, member=member)
    except HistoryUnavailable as exc:
        logger.warning("the report history could not be read from the store: %s", exc)
        window = history.window(now - seconds, now)
        out["history_note"] = ("the store could not be read, so this report holds only this server's counts that "
                               "had not been written to it yet")
    out.update(await asyncio.to_thread(summarize, window, model))
    if period_quality is not None:
        try:
            await asyncio.to_thread(_accuracy_from_the_log, out["models"], period_quality, now - seconds, now)
        except Exception as exc:  # the store is down: the report still shows what the history holds
            logger.warning("the report's accuracy could not be read from the prediction log: %s", exc)
            out["accuracy_note"] = ("the prediction log could not be read, so accuracy is that of the labels this "
                                    "server received in the period")
    if quality is None:
        out["quality"], out["quality_note"] = [], "quality monitoring is turned off on this server"
    else:
        try:
            out["quality"] = quality_report(quality, model, quality.now())
        except KeyError:
            out["quality"] = []
    if model is not None and not (out["models"] or out["quality"] or out["alerts"]):
        raise KeyError(model)
    return out


def _accuracy_from_the_log(models: list[dict[str, Any]], period_quality: PeriodQuality, start: float,
                           end: float) -> None:
    """Each monitored version's accuracy over the predictions made in the period, from the prediction log (labels
    that arrived later, or at another process sharing the store, included), with label coverage and delay."""
    for entry in models:
        for version in entry["versions"]:
            figures = period_quality(entry["model"], version["version"], start, end)
            if figures is None:
                continue
            right = int(figures.metrics.confusion.trace())
            delay = figures.delay_percentiles
            version.update({
                "accuracy": figures.metrics.accuracy, "feedback_rows": figures.labelled, "correct_rows": right,
                "logged_rows": figures.predictions, "label_coverage": figures.coverage,
                "label_delay_p50_seconds": delay[0] if delay else None, "accuracy_source": "prediction log"})


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds / 3600:g} hours"


def add_report_routes(app: web.Application, recorder: HistoryRecorder | None, quality: QualityMonitor | None,
                      period_quality: PeriodQuality | None = None) -> None:
    """`/report` (HTML) and `/report.json`, both taking `?since=24h`, `?model=NAME` and `?member=ID` (one member of
    the fleet)."""

    async def build(request: web.Request) -> dict[str, Any]:
        if recorder is None:
            raise web.HTTPServiceUnavailable(text="telemetry is turned off on this server, so it keeps no report\n")
        model = request.query.get("model") or None
        member = request.query.get("member") or None
        since = request.query.get("since") or DEFAULT_SINCE
        try:
            return await operator_report(recorder, quality, since=since, model=model, period_quality=period_quality,
                                         member=member)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        except KeyError:
            raise web.HTTPNotFound(text=f"model {model!r} is not monitored and made no calls in the last {since}\n"
                                   ) from None

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=await asyncio.to_thread(render, await build(request)), content_type="text/html")

    async def as_json(request: web.Request) -> web.Response:
        return web.json_response(await build(request))

    app.router.add_get("/report", page)
    app.router.add_get("/report.json", as_json)
