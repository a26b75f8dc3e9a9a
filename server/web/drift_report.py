"""The drift and accuracy section of the report: per monitored classifier version, every drift test with a
reference-vs-live plot per feature, the class mix, and accuracy next to the label-free estimate (see
`vigil.server.web.reports` for the whole report)."""

from __future__ import annotations

import html
import math
import time
from typing import Any

from vigil.server.web.plots import bars as _bars
from vigil.telemetry.quality.monitor import QualityMonitor, VersionQuality
from vigil.telemetry.quality.reference_profile import FeatureReference

_COLOURS = {"no_drift": "#2e7d32", "possible_drift": "#ef6c00", "drift": "#c62828", "": "#616161"}


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def version_report(quality: VersionQuality, now: float) -> dict[str, Any]:
    """One version's report as plain JSON."""
    figures = quality.figures
    recent, timed = figures.recent, figures.timed.metrics
    out: dict[str, Any] = {
        "model": quality.model, "version": quality.version, "labels": list(quality.labels),
        "has_reference": quality.profile is not None, "expected_accuracy": quality.expected_accuracy(),
        "feedback_rows": figures.labelled_total,
        "accuracy": {"count_window": {"rows": recent.rows, "accuracy": recent.accuracy,
                                      "classes": [dict(zip(("precision", "recall", "f1", "support"), c, strict=True),
                                                       label=label)
                                                  for label, c in zip(quality.labels, recent.per_class(), strict=True)],
                                      "confusion": recent.confusion.tolist()},
                     "time_window": {"rows": timed.rows, "accuracy": timed.accuracy},
                     "windows": [{"name": w.name, "predictions": w.predictions, "labelled": w.labelled,
                                  "coverage": w.coverage, "accuracy": w.metrics.accuracy,
                                  "expected_accuracy": w.expected_labelled,
                                  "label_delay_seconds": list(w.delay_percentiles or ())}
                                 for w in (*figures.windows, *figures.days)]},
        "drift": None,
    }
    result, profile = quality.drift, quality.profile
    if result is None or profile is None:
        return out
    out["drift"] = {
        "computed_unix": result.computed_at, "window_rows": result.window_rows, "status": result.status.label,
        "predicted_classes": {"reference": list(profile.predicted_prior), "live": list(result.live_class_proportions),
                              "chi2_statistic": _number(result.chi2_statistic),
                              "chi2_pvalue": _number(result.chi2_pvalue), "status": result.chi2_status.label},
        "features": [{"feature": f.name, "psi": _number(f.psi), "psi_status": f.psi_status.label,
                      "ks_statistic": _number(f.ks_statistic), "ks_pvalue": _number(f.ks_pvalue),
                      "ks_status": f.ks_status.label, "bins": _bin_names(reference),
                      "reference": list(reference.proportions), "live": list(f.live_proportions)}
                     for f, reference in zip(result.features, profile.features, strict=True)],
    }
    return out


def _bin_names(reference: FeatureReference) -> list[str]:
    edges = reference.edges
    if not edges:
        return ["all"]
    return ([f"≤ {edges[0]:.4g}"] + [f"{a:.4g}–{b:.4g}" for a, b in zip(edges, edges[1:], strict=False)]
            + [f"> {edges[-1]:.4g}"])


def _status(label: str) -> str:
    return f'<b style="color:{_COLOURS.get(label, "#616161")}">{html.escape(label.replace("_", " ") or "–")}</b>'


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def version_html(report: dict[str, Any]) -> str:
    """One version's section of the HTML report."""
    e = html.escape
    title = f"{e(report['model'])} version {e(report['version'])}"
    accuracy = report["accuracy"]["count_window"]
    lines = [f"<section><h2>{title}</h2>",
             f"<p>Accuracy (recent {accuracy['rows']} labelled rows): {_fmt(accuracy['accuracy'], '.1%')} · "
             f"time window: {_fmt(report['accuracy']['time_window']['accuracy'], '.1%')} · "
             f"expected accuracy (label-free): {_fmt(report['expected_accuracy'], '.1%')}</p>"]
    if accuracy["rows"]:
        lines.append("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>")
        lines += [f"<tr><td>{e(c['label'])}</td><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td>"
                  f"<td>{c['f1']:.3f}</td><td>{c['support']}</td></tr>" for c in accuracy["classes"]]
        lines.append("</table><p>Confusion matrix (rows true, columns predicted):</p>"
                     "<table><tr><th>true \\ predicted</th>"
                     + "".join(f"<th>{e(label)}</th>" for label in report["labels"]) + "</tr>")
        lines += ["<tr><th>" + e(label) + "</th>" + "".join(f"<td>{n}</td>" for n in row) + "</tr>"
                  for label, row in zip(report["labels"], accuracy["confusion"], strict=True)]
        lines.append("</table>")
    drift = report["drift"]
    if not report["has_reference"]:
        lines.append("<p>No reference profile: drift is not checked (build one with <code>vigil profile</code>).</p>")
    elif drift is None:
        lines.append("<p>No drift check yet (it needs enough live rows).</p>")
    else:
        classes = drift["predicted_classes"]
        lines += [f"<p>Drift: {_status(drift['status'])} over {drift['window_rows']} live rows, checked "
                  f"{e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(drift['computed_unix'])))}.</p>",
                  f"<h3>Predicted classes</h3><p>chi-square {_fmt(classes['chi2_statistic'])}, p = "
                  f"{_fmt(classes['chi2_pvalue'], '.3g')}, {_status(classes['status'])}</p>",
                  _bars(report["labels"], classes["reference"], classes["live"], "predicted classes"),
                  "<h3>Features</h3><table><tr><th>feature</th><th>PSI</th><th>PSI status</th><th>KS</th><th>KS p</th>"
                  "<th>KS status</th></tr>"]
        lines += [f"<tr><td>{e(f['feature'])}</td><td>{_fmt(f['psi'])}</td><td>{_status(f['psi_status'])}</td>"
                  f"<td>{_fmt(f['ks_statistic'])}</td><td>{_fmt(f['ks_pvalue'], '.3g')}</td>"
                  f"<td>{_status(f['ks_status'])}</td></tr>" for f in drift["features"]]
        lines.append("</table><p>Reference (grey) and live (blue) share of rows per reference bin:</p>")
        lines += [f"<figure><figcaption>{e(f['feature'])}: PSI {_fmt(f['psi'])}</figcaption>"
                  f"{_bars(f['bins'], f['reference'], f['live'], f['feature'])}</figure>" for f in drift["features"]]
    lines.append("</section>")
    return "\n".join(lines)


def report(monitor: QualityMonitor, model: str | None, now: float) -> list[dict[str, Any]]:
    """Reports of every monitored version, or of `model`'s; KeyError when `model` is not monitored."""
    versions = [q for q in monitor.versions() if model is None or q.model == model]
    if model is not None and not versions:
        raise KeyError(model)
    return [version_report(q, now) for q in versions]
