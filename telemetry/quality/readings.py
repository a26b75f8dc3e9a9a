"""What the Telemetry stream and the gauges read from the quality monitor: a section per version for the stream,
and gauge readings for /metrics and OTLP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.telemetry.quality.figures import ReliabilityBin, WindowFigures
from vigil.telemetry.quality.monitor import Key, QualityMonitor, VersionQuality
from vigil.telemetry.quality.outcomes import WindowMetrics


def quality_sections(monitor: QualityMonitor) -> dict[Key, telemetry_pb2.QualityTelemetry]:
    """Per version: feedback accuracy from the prediction log, confusion matrix, expected accuracy and drift (the
    class mix and confidence come from the instruments, over each frame's interval)."""
    return {(q.model, q.version): quality_section(q) for q in monitor.versions()}


def _window(metrics: WindowMetrics, labels: Sequence[str], size: float) -> telemetry_pb2.AccuracyWindow:
    window = telemetry_pb2.AccuracyWindow(rows=metrics.rows, size=size)
    accuracy = metrics.accuracy
    if accuracy is not None:
        window.accuracy = accuracy
        window.classes.extend(
            telemetry_pb2.ClassMetrics(label=label, precision=p, recall=r, f1=f, support=s)
            for label, (p, r, f, s) in zip(labels, metrics.per_class(), strict=True))
    return window


def _prediction_window(figures: WindowFigures, labels: Sequence[str]) -> telemetry_pb2.PredictionWindow:
    window = telemetry_pb2.PredictionWindow(
        name=figures.name, start_unix=figures.start, seconds=figures.seconds, predictions=figures.predictions,
        accuracy=_window(figures.metrics, labels, figures.seconds),
        confusion=telemetry_pb2.ConfusionMatrix(labels=labels, counts=figures.metrics.confusion.ravel().tolist()))
    for field, value in (("coverage", figures.coverage), ("expected_accuracy_labelled", figures.expected_labelled),
                         ("expected_accuracy", figures.expected_all)):
        if value is not None:
            setattr(window, field, value)
    if figures.delay_percentiles is not None:
        (window.label_delay_p50_seconds, window.label_delay_p90_seconds,
         window.label_delay_p99_seconds) = figures.delay_percentiles
    return window


def _reliability(b: ReliabilityBin) -> telemetry_pb2.ReliabilityBin:
    return telemetry_pb2.ReliabilityBin(lower=b.lower, upper=b.upper, rows=b.rows, mean_confidence=b.mean_confidence,
                                        accuracy=b.accuracy)


def quality_section(quality: VersionQuality) -> telemetry_pb2.QualityTelemetry:
    """The parts of a version's quality section that do not depend on the frame's interval."""
    figures = quality.figures
    recent = figures.recent
    section = telemetry_pb2.QualityTelemetry(
        feedback_total=figures.labelled_total,
        recent=_window(recent, quality.labels, figures.count_rows),
        timed=_window(figures.timed.metrics, quality.labels, figures.timed.seconds),
        confusion=telemetry_pb2.ConfusionMatrix(labels=quality.labels, counts=recent.confusion.ravel().tolist()),
        expected_accuracy_rows=len(quality.confidences.values()),
        drift=telemetry_pb2.DriftTelemetry(has_reference=quality.profile is not None),
        windows=[_prediction_window(w, quality.labels) for w in figures.windows],
        days=[_prediction_window(d, quality.labels) for d in figures.days],
        reliability=[_reliability(b) for b in figures.reliability])
    estimate = quality.expected_accuracy()
    if estimate is not None:
        section.expected_accuracy = estimate
    result = quality.drift
    if result is not None:
        drift = section.drift
        drift.computed_unix_nanos = int(result.computed_at * 1e9)
        drift.window_rows = result.window_rows
        drift.status = result.status.label
        drift.chi2_statistic, drift.chi2_pvalue = result.chi2_statistic, result.chi2_pvalue
        drift.chi2_status = result.chi2_status.label
        drift.features.extend(
            telemetry_pb2.FeatureDrift(feature=f.name, psi=f.psi, psi_status=f.psi_status.label,
                                       ks_statistic=f.ks_statistic, ks_pvalue=f.ks_pvalue,
                                       ks_status=f.ks_status.label) for f in result.features)
    return section


def quality_readings(monitor: QualityMonitor) -> dict[str, Any]:
    """Gauge readings (see `vigil.telemetry.metrics.gauges.QUALITY_GAUGES`) from the monitor's latest results."""
    def accuracy() -> list[tuple[dict[str, str], float]]:
        out = []
        for q in monitor.versions():
            figures = q.figures
            windows = [("count", figures.recent), ("time", figures.timed.metrics),
                       *((w.name, w.metrics) for w in figures.windows)]
            for window, metrics in windows:
                if metrics.accuracy is not None:
                    out.append(({"model": q.model, "version": q.version, "window": window}, metrics.accuracy))
        return out

    def coverage() -> list[tuple[dict[str, str], float]]:
        return [({"model": q.model, "version": q.version, "window": w.name}, c) for q in monitor.versions()
                for w in q.figures.windows if (c := w.coverage) is not None]

    def delay() -> list[tuple[dict[str, str], float]]:
        return [({"model": q.model, "version": q.version, "window": w.name, "percentile": percentile}, seconds)
                for q in monitor.versions() for w in q.figures.windows if w.delay_percentiles is not None
                for percentile, seconds in zip(("50", "90", "99"), w.delay_percentiles, strict=True)]

    def expected() -> list[tuple[dict[str, str], float]]:
        return [({"model": q.model, "version": q.version}, e) for q in monitor.versions()
                if (e := q.expected_accuracy()) is not None]

    def per_feature(attribute: str) -> Any:
        def read() -> list[tuple[dict[str, str], float]]:
            return [({"model": q.model, "version": q.version, "feature": f.name}, float(getattr(f, attribute)))
                    for q in monitor.versions() if q.drift is not None for f in q.drift.features]
        return read

    def per_version(attribute: str) -> Any:
        def read() -> list[tuple[dict[str, str], float]]:
            return [({"model": q.model, "version": q.version}, float(getattr(q.drift, attribute)))
                    for q in monitor.versions() if q.drift is not None]
        return read

    def status() -> list[tuple[dict[str, str], float]]:
        out = []
        for q in monitor.versions():
            if q.drift is None:
                continue
            base = {"model": q.model, "version": q.version}
            for f in q.drift.features:
                out.append(({**base, "feature": f.name, "test": "psi"}, float(f.psi_status)))
                out.append(({**base, "feature": f.name, "test": "ks"}, float(f.ks_status)))
            out.append(({**base, "feature": "predicted_class", "test": "chi2"}, float(q.drift.chi2_status)))
        return out

    return {"accuracy": accuracy, "label_coverage": coverage, "label_delay": delay,
            "expected_accuracy": expected, "psi": per_feature("psi"),
            "ks_statistic": per_feature("ks_statistic"), "ks_pvalue": per_feature("ks_pvalue"),
            "chi2_statistic": per_version("chi2_statistic"), "chi2_pvalue": per_version("chi2_pvalue"),
            "drift_status": status, "drift_window": per_version("window_rows")}
