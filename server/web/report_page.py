"""The operator report as one self-contained HTML page (plots as inline SVG), drawn from its JSON form."""

from __future__ import annotations

import html
import time
from typing import Any

from vigil.server.web.drift_report import version_html
from vigil.server.web.plots import colour, line, stacked

_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:.5em 0}"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th:first-child,td.name{text-align:left}"
          "figure{display:inline-block;margin:.5em}.note{color:#616161}h2{margin-top:1.6em}"
          ".drift{color:#c62828}.possible_drift{color:#ef6c00}.no_drift{color:#2e7d32}")


def render(report: dict[str, Any]) -> str:
    """The page for a report built by `vigil.server.web.reports.operator_report`."""
    period = report["period"]
    title = f"Vigil report: last {period['since']}" + (f", model {period['model']}" if period["model"] else "")
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class='period'>{_when(period['from_unix'])} to {_when(period['to_unix'])} UTC, in one-minute "
             f"buckets.</p>"]
    if period.get("note"):
        parts.append(f"<p class='note clamped'>{_e(period['note'])}.</p>")
    if report.get("history_note"):
        parts.append(f"<p class='note'>{_e(report['history_note'])}.</p>")
    parts += [_totals(report), _plots(report), _models(report), _classes(report), _alerts(report["alerts"]),
              _uptime(report["uptime"]), _quality(report)]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{_STYLE}</style>"
            f"</head><body>{''.join(parts)}</body></html>")


def _totals(report: dict[str, Any]) -> str:
    totals, uptime = report["totals"], report["uptime"]
    latency, throughput = totals["latency_ms"], totals["throughput"]
    other = totals["other_calls"]
    other_n = sum(other.values())
    other_codes = ", ".join(f"{_e(code)} {n}" for code, n in other.items())
    rows = [("Requests (calls that named a model)",
             f"<b id='total-requests'>{totals['requests']}</b>: the sum of the Models table's requests"),
            ("Other calls (named no model)",
             f"<span id='other-calls'>{other_n}</span>" + (f" ({other_codes})" if other else "")
             + ": listings, streams and calls refused before a model was resolved, counted apart: not in the "
               "requests, errors, latency or throughput of this report"),
            ("Errors", f"{totals['errors']} ({_ratio(totals['error_ratio'])}): the sum of the Models table's errors"),
            ("Latency p50 / p95 / p99 (ms)", " / ".join(_ms(latency[k]) for k in ("p50", "p95", "p99"))),
            ("Mean latency (ms)", _ms(latency["mean"])),
            ("Throughput, mean (req/s)",
             f"<span id='mean-rps'>{_rate(throughput['mean_rps'])}</span> over the "
             f"{_duration(throughput['mean_rps_seconds'])} the server was up from "
             f"{_when(throughput['mean_rps_from_unix'])} UTC"
             + (" (the server's first start, after the period's start)"
                if throughput["mean_rps_from_unix"] > report["period"]["from_unix"] else " (the whole period)")),
            ("Throughput, peak minute (req/s)", _peak(throughput)),
            ("Rows run", str(totals["rows"])),
            ("Uptime", _ratio(uptime["ratio"]))]
    errors = totals["errors_by_code"]
    by_code = ("".join(f"<tr><td class='name'>{_e(code)}</td><td>{n}</td></tr>" for code, n in errors.items())
               if errors else "<tr><td class='name' colspan='2'>none</td></tr>")
    return ("<h2>Totals</h2><table class='totals'><tr><th>measure</th><th>value</th></tr>"
            + "".join(f"<tr><th>{name}</th><td class='name'>{value}</td></tr>" for name, value in rows)
            + "</table><h3>Errors by status code (calls that named a model)</h3><table class='errors'>"
              "<tr><th>status code</th><th>calls</th></tr>" + by_code + "</table>")


def _peak(throughput: dict[str, Any]) -> str:
    if throughput["peak_minute_unix"] is None:
        return "–"
    seconds = throughput["peak_rps_seconds"]
    part = "" if seconds >= 60 else f", of which the server was observed {_duration(seconds)}"
    return (f"{_rate(throughput['peak_rps'])}: {throughput['peak_requests']} requests in the minute from "
            f"{_when(throughput['peak_minute_unix'])} UTC{part}")


def _plots(report: dict[str, Any]) -> str:
    timeline = report["timeline"]
    points = timeline["points"]
    minutes = timeline["step_seconds"] / 60
    starts = [p["start_unix"] for p in points]
    per = "minute" if minutes == 1 else f"minute (averaged over {minutes:g}-minute points)"
    requests = [p["requests"] / minutes for p in points]
    p99 = [p["p99_ms"] for p in points]
    errors = [p["errors"] / p["requests"] if p["requests"] else None for p in points]
    return ("<h2>Over time</h2>"
            f"<figure><figcaption>Requests per {per}</figcaption>"
            f"{line(requests, starts, 'requests per minute', plot='requests')}</figure>"
            f"<figure><figcaption>p99 latency (ms)</figcaption>{line(p99, starts, 'p99 ms', plot='p99', unit='ms')}"
            "</figure>"
            f"<figure><figcaption>Error ratio</figcaption>"
            f"{line(errors, starts, 'error ratio', plot='errors', percent=True)}</figure>")


def _models(report: dict[str, Any]) -> str:
    if not report["models"]:
        return "<h2>Models</h2><p>No calls named a model in this period.</p>"
    head = ("<tr><th>model</th><th>version</th><th>requests</th><th>errors</th><th>error ratio</th>"
            "<th>errors by status code</th><th>p50 ms</th><th>p99 ms</th><th>rows</th><th>accuracy (labelled rows)</th>"
            "<th>drift status (max PSI)</th></tr>")
    rows = []
    for model in report["models"]:
        for v in model["versions"]:
            drift = v["drift"]
            drift_cell = "–" if drift is None else (f"<span class='{_e(drift['status'])}'>"
                                                     f"{_e(drift['status'].replace('_', ' '))}</span> "
                                                     f"({_number(drift['max_psi'])})")
            accuracy = "–" if v["accuracy"] is None else f"{v['accuracy']:.1%} ({v['feedback_rows']})"
            codes = ", ".join(f"{_e(code)} {n}" for code, n in v["errors_by_code"].items()) or "–"
            rows.append(f"<tr data-model='{_e(model['model'])}' data-version='{_e(v['version'])}'>"
                        f"<td class='name'>{_e(model['model'])}</td><td class='name version'>{_version(v)}</td>"
                        f"<td class='requests'>{v['requests']}</td><td class='errors'>{v['errors']}</td>"
                        f"<td class='error-ratio'>{_ratio(v['error_ratio'])}</td>"
                        f"<td class='name codes'>{codes}</td><td class='p50'>{_ms(v['latency_ms']['p50'])}</td>"
                        f"<td class='p99'>{_ms(v['latency_ms']['p99'])}</td><td>{v['rows']}</td><td>{accuracy}</td>"
                        f"<td>{drift_cell}</td></tr>")
    totals = report["totals"]
    other = sum(totals["other_calls"].values())
    return (f"<h2>Models</h2><table class='models'>{head}{''.join(rows)}</table>"
            f"<p class='note models-sum'>The requests of this table add up to the headline total "
            f"({totals['requests']}) and its errors to the total errors ({totals['errors']})"
            + (f"; the {other} other calls, which named no model, are in neither" if other else "") + ".</p>")


def _version(v: dict[str, Any]) -> str:
    """A version's name, or what a row of no one version holds (never a blank cell)."""
    if v["version"]:
        return _e(v["version"])
    methods = ", ".join(f"{_e(method)} {sum(codes.values())}" for method, codes in v["calls_by_method"].items())
    return (f"<i>(no version: {_e(v.get('version_note') or 'calls that named the model but no one version')}"
            f"{'; ' + methods if methods else ''})</i>")


def _classes(report: dict[str, Any]) -> str:
    parts = []
    starts = [p["start_unix"] for p in report["timeline"]["points"]]
    for model in report["models"]:
        for v in model["versions"]:
            classes = v["classes"]
            if not classes:
                continue
            total = sum(classes.values())
            name = f"{model['model']} version {v['version'] or '(none)'}"
            confidence = "" if v["confidence_mean"] is None else f"; mean confidence {v['confidence_mean']:.3f}"
            table = "".join(f"<tr><td class='name'><span style='color:{colour(j)}'>■</span> {_e(label)}</td>"
                            f"<td>{n}</td><td>{n / total:.1%}</td></tr>"
                            for j, (label, n) in enumerate(classes.items()))
            parts.append(f"<h3>{_e(name)}</h3><p>{total} rows{confidence}</p><table class='classes'>"
                         f"<tr><th>class (colour in the plot)</th><th>rows</th><th>share</th></tr>{table}</table>"
                         f"<figure><figcaption>Class mix over time</figcaption>"
                         f"{stacked(list(classes), v['class_timeline'], starts, name, plot='classes')}</figure>")
    return "<h2>Class mix</h2>" + ("".join(parts) or "<p>No classifier predicted in this period.</p>")


def _alerts(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "<h2>Alerts fired</h2><p>None.</p>"
    rows = "".join(f"<tr class='{_e(a['severity'])}'><td class='name'>{_when(a['fired_unix'])}</td>"
                   f"<td>{_e(a['severity'])}</td><td class='name'>{_e(a['name'])}</td>"
                   f"<td class='name'>{_e(a['model'])}{' v' + _e(a['version']) if a['version'] else ''}</td>"
                   f"<td class='name'>{_e(a['summary'])}</td></tr>" for a in alerts)
    return ("<h2>Alerts fired</h2><table class='alerts'><tr><th>fired (UTC)</th><th>severity</th><th>alert</th>"
            f"<th>model</th><th>summary</th></tr>{rows}</table>")


def _uptime(uptime: dict[str, Any]) -> str:
    starts = ", ".join(_when(s) for s in uptime["starts_unix"]) or "none in this period"
    return (f"<h2>Uptime</h2><p>Up {_duration(uptime['up_seconds'])} of the {_duration(uptime['observed_seconds'])} "
            f"observed since {_when(uptime['observed_from_unix'])} UTC ({_ratio(uptime['ratio'])}); down "
            f"{_duration(uptime['down_seconds'])}. Starts: {starts}. Server processes: {uptime['members']}.</p>")


def _quality(report: dict[str, Any]) -> str:
    body = "\n".join(version_html(r) for r in report["quality"])
    if not body:
        body = f"<p>{_e(report.get('quality_note') or 'No classifier is monitored.')}</p>"
    return f"<h2>Drift and accuracy now</h2><div class='quality'>{body}</div>"


def _e(text: object) -> str:
    return html.escape(str(text))


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix))


def _ms(value: float | None) -> str:
    """Milliseconds, two decimals."""
    return "–" if value is None else f"{value:.2f}"


def _rate(value: float | None) -> str:
    """Requests per second, two decimals."""
    return "–" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    """A percentage, one decimal."""
    return "–" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"
