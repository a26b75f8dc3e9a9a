"""A period of the report history summed up as plain JSON: totals, uptime, per-model and per-version usage, class mix,
accuracy and drift, the alerts fired, and a timeline for plots.

Percentiles come from the merged request-duration buckets (linear within the bucket, as `histogram_quantile`), so
they lie in the same bucket as the true percentile. Totals count the calls that named a model, so they are the sums of
the per-model figures; calls that named none (listings, streams, calls refused before a model was resolved) are counted
apart, as `other_calls`. The window holds every member of the fleet: counts are their sums, and rates are over the
seconds in which at least one member was up, never over time before the first one started or while all were down.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from vigil.telemetry.history.minutes import (
    MINUTE_SECONDS,
    Key,
    VersionMinute,
    dense,
    merge_all,
    minute_of,
    sparse_items,
)
from vigil.telemetry.history.window import Window, covered
from vigil.telemetry.quality.drift import DriftStatus
from vigil.telemetry.stream.frames import quantile

PEAK_MIN_SECONDS = 15.0
"""The least seconds a minute's rate is taken over when the report looks for its busiest minute."""
MAX_POINTS = 240
"""Most points in a timeline: longer periods put several minutes in each point."""
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
NO_VERSION = "calls on the model as a whole (loads, unloads, rollouts) or refused before a version was chosen"
"""What the entry of a model's calls that named no one version of it (its `version` empty) holds: its
`version_note`."""


def summarize(window: Window, model: str | None = None) -> dict[str, Any]:
    """The report's numbers over `window`, of every model or only `model`."""
    minutes = [(m, {k: v for k, v in versions.items() if model is None or k[0] == model})
               for m, versions in window.minutes]
    by_version: dict[Key, list[VersionMinute]] = {}
    for _, versions in minutes:
        for key, minute in versions.items():
            by_version.setdefault(key, []).append(minute)
    per_version = {key: merge_all(parts) for key, parts in by_version.items()}
    named = {k: v for k, v in per_version.items() if k[0]}
    totals = usage(merge_all(named.values()), window.duration_bounds)
    totals["throughput"] = _throughput(window, minutes, totals["requests"])
    totals["other_calls"] = usage(merge_all(v for k, v in per_version.items() if not k[0]),
                                  window.duration_bounds)["calls_by_code"]
    first, step, points = _bins(window)
    models = []
    for name in sorted({k[0] for k in named}):
        entries = [_version(key, named[key], window, minutes, first, step, points)
                   for key in sorted((k for k in named if k[0] == name), key=lambda k: _version_order(k[1]))]
        requests = sum(v["requests"] for v in entries)
        errors = sum(v["errors"] for v in entries)
        models.append({"model": name, "requests": requests, "errors": errors,
                       "error_ratio": errors / requests if requests else None, "versions": entries})
    return {
        "totals": totals, "uptime": uptime(window), "models": models,
        "alerts": [{"name": a.name, "severity": a.severity, "model": a.model, "version": a.version,
                    "summary": a.summary, "fired_unix": a.fired_unix}
                   for a in window.alerts if model is None or a.model == model],
        "timeline": _timeline(window, minutes, first, step, points),
    }


def usage(minute: VersionMinute, bounds: Sequence[float]) -> dict[str, Any]:
    """Calls, errors by code, latency percentiles and rows of a (merged) minute."""
    by_code: dict[str, int] = {}
    by_method: dict[str, dict[str, int]] = {}
    for (method, code), n in sorted(minute.calls.items()):
        by_code[code] = by_code.get(code, 0) + n
        by_method.setdefault(method, {})[code] = n
    requests = sum(by_code.values())
    errors = requests - by_code.get("OK", 0)
    return {"requests": requests, "errors": errors, "error_ratio": errors / requests if requests else None,
            "errors_by_code": {c: n for c, n in sorted(by_code.items()) if c != "OK"},
            "calls_by_code": dict(sorted(by_code.items())), "calls_by_method": by_method,
            "latency_ms": latency(minute, bounds), "rows": minute.rows}


def latency(minute: VersionMinute, bounds: Sequence[float]) -> dict[str, float | None]:
    counts = dense(minute.duration, len(bounds) + 1)
    observed = sum(counts)
    out: dict[str, float | None] = {name: quantile(q, bounds, counts) * 1e3 if observed else None
                                    for name, q in QUANTILES}
    out["mean"] = minute.duration_sum / observed * 1e3 if observed else None
    return out


def uptime(window: Window) -> dict[str, Any]:
    """Seconds in which at least one member of the fleet was up in the window, of the seconds the history observed
    (from the first member's first start), and how many members had minutes in it."""
    observed_from = max(window.start, window.first_seen) if window.first_seen is not None else window.end
    observed = max(window.end - observed_from, 0.0)
    up = covered(window.up, observed_from, window.end)
    return {"up_seconds": up, "observed_seconds": observed, "down_seconds": max(observed - up, 0.0),
            "ratio": min(up / observed, 1.0) if observed > 0 else None, "observed_from_unix": observed_from,
            "starts_unix": window.starts, "members": window.members}


def _throughput(window: Window, minutes: Iterable[tuple[int, dict[Key, VersionMinute]]], requests: int
                ) -> dict[str, Any]:
    """The mean rate over the seconds of the window in which at least one member was up (from the history's first
    start, when that came after the window's start; the whole window when the history knows of no start), and the
    rate of the busiest minute over the seconds of that minute some member was up (a minute before the first start
    or the one still open counts only its seconds so far)."""
    known = window.first_seen is not None
    if window.first_seen is None:
        mean_from, mean_seconds = window.start, max(window.end - window.start, 0.0)
    else:
        mean_from = min(max(window.start, window.first_seen), window.end)
        mean_seconds = covered(window.up, mean_from, window.end)
    peak, peak_n, peak_seconds, peak_minute = 0.0, 0, 0.0, None
    for m, versions in minutes:
        n = sum(sum(v.calls.values()) for k, v in versions.items() if k[0])
        begin = m * MINUTE_SECONDS
        end = min(begin + MINUTE_SECONDS, window.end)
        seconds = covered(window.up, begin, end) if known else end - begin
        # a sliver of a minute (the one just begun, the server's first) counts as PEAK_MIN_SECONDS at least, so a
        # burst in its first second does not read as the busiest rate (unless the server is younger than that)
        seconds = max(seconds, min(PEAK_MIN_SECONDS, mean_seconds)) if seconds > 0 else seconds
        if n and seconds > 0 and n / seconds > peak:
            peak, peak_n, peak_seconds, peak_minute = n / seconds, n, seconds, m
    return {"mean_rps": requests / mean_seconds if mean_seconds > 0 else 0.0, "mean_rps_seconds": mean_seconds,
            "mean_rps_from_unix": mean_from, "peak_rps": peak, "peak_requests": peak_n,
            "peak_rps_seconds": peak_seconds,
            "peak_minute_unix": None if peak_minute is None else peak_minute * MINUTE_SECONDS}


def _version(key: Key, total: VersionMinute, window: Window, minutes: list[tuple[int, dict[Key, VersionMinute]]],
             first: int, step: int, points: int) -> dict[str, Any]:
    out: dict[str, Any] = {"version": key[1], **usage(total, window.duration_bounds)}
    if not key[1]:
        out["version_note"] = NO_VERSION
    labels = sorted(total.predictions)
    confidence_rows = sum(n for _, n in sparse_items(total.confidence))
    out.update({
        "classes": {label: total.predictions[label] for label in labels},
        "confidence_mean": total.confidence_sum / confidence_rows if confidence_rows else None,
        "feedback_rows": total.feedback, "correct_rows": total.correct,
        "accuracy": total.correct / total.feedback if total.feedback else None,
        "drift": None if total.drift_status < 0 else {"status": DriftStatus(total.drift_status).label,
                                                      "max_psi": total.drift_psi if math.isfinite(total.drift_psi)
                                                      else None},
    })
    if labels:
        timeline = [[0] * len(labels) for _ in range(points)]
        for m, versions in minutes:
            minute = versions.get(key)
            if minute is not None:
                row = timeline[min((m - first) // step, points - 1)]
                for i, label in enumerate(labels):
                    row[i] += minute.predictions.get(label, 0)
        out["class_timeline"] = timeline
    return out


def _bins(window: Window) -> tuple[int, int, int]:
    """First minute, minutes per point, and points of the window's timeline."""
    first, last = minute_of(window.start), minute_of(window.end)
    span = last - first + 1
    step = -(-span // MAX_POINTS)
    return first, step, -(-span // step)


def _timeline(window: Window, minutes: list[tuple[int, dict[Key, VersionMinute]]], first: int, step: int,
              points: int) -> dict[str, Any]:
    bins: list[list[VersionMinute]] = [[] for _ in range(points)]
    for m, versions in minutes:
        bins[min(max((m - first) // step, 0), points - 1)].extend(v for k, v in versions.items() if k[0])
    out = []
    for index, parts in enumerate(bins):
        part = usage(merge_all(parts), window.duration_bounds)
        out.append({"start_unix": (first + index * step) * MINUTE_SECONDS, "requests": part["requests"],
                    "errors": part["errors"], "p99_ms": part["latency_ms"]["p99"]})
    return {"step_seconds": step * MINUTE_SECONDS, "points": out}


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)
