"""Gauges read when metrics are collected: serving state from the server, and this process's resources."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Observation

from vigil.telemetry.metrics.instruments import Instruments

Readings = Callable[[], Iterable[tuple[dict[str, str], float]]]
"""(labels, value) pairs, produced on demand."""

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _observer(source: Readings) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, labels) for labels, value in source()]

    return observe


def register_serving_gauges(instruments: Instruments, *, queue_depth: Readings, running: Readings,
                            model_ready: Readings, load_seconds: Readings, in_flight: Readings,
                            rows: Readings) -> None:
    """Per model version: requests queued, runs executing, ready (1) or not (0), and how long loading took;
    per method: calls being handled."""
    instruments.observe_counter("vigil.inference.rows", "{row}", "Rows inferred by successful runs",
                                _observer(rows))
    instruments.observe("vigil.requests.in_flight", "{request}", "Calls being handled now", _observer(in_flight))
    instruments.observe("vigil.queue.depth", "{request}", "Requests waiting for an instance", _observer(queue_depth))
    instruments.observe("vigil.runs.in_flight", "{run}", "ONNX Runtime runs executing now", _observer(running))
    instruments.observe("vigil.model.ready", "", "1 when the model version serves, else 0", _observer(model_ready))
    instruments.observe("vigil.model.load.duration", "s", "Seconds the version took to load and warm up",
                        _observer(load_seconds))


def process_cpu_seconds() -> tuple[float, float]:
    """User and system CPU seconds this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def resident_bytes() -> int:
    """Resident memory of this process."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * _PAGE


def register_process_gauges(instruments: Instruments) -> None:
    """CPU seconds and resident memory of this process."""

    def cpu() -> Iterable[tuple[dict[str, str], float]]:
        user, system = process_cpu_seconds()
        return [({"state": "user"}, user), ({"state": "system"}, system)]

    def memory() -> Iterable[tuple[dict[str, str], float]]:
        return [({}, float(resident_bytes()))]

    instruments.observe_counter("process.cpu.time", "s", "CPU seconds used by the server process", _observer(cpu))
    instruments.observe("process.memory.usage", "By", "Resident memory of the server process", _observer(memory))


def register_quality_gauges(instruments: Instruments, readings: Mapping[str, Readings]) -> None:
    """Accuracy, the label-free estimate, drift, SLOs and firing alerts, from the monitors' latest results
    (`readings` keyed as `QUALITY_GAUGES` below; missing keys are not registered)."""
    for key, (name, unit, description) in QUALITY_GAUGES.items():
        if key in readings:
            instruments.observe(name, unit, description, _observer(readings[key]))


QUALITY_GAUGES = {
    "accuracy": ("vigil.accuracy", "", "Fraction of labelled rows predicted right, over the count or time window"),
    "expected_accuracy": ("vigil.accuracy.expected", "",
                          "Label-free accuracy estimate: mean calibrated confidence of recent predictions"),
    "psi": ("vigil.drift.psi", "", "Population stability index of a feature against the reference profile"),
    "ks_statistic": ("vigil.drift.ks.statistic", "", "Two-sample Kolmogorov-Smirnov statistic of a feature"),
    "ks_pvalue": ("vigil.drift.ks.pvalue", "", "Kolmogorov-Smirnov p-value of a feature"),
    "chi2_statistic": ("vigil.drift.chi2.statistic", "", "Chi-square statistic of the predicted-class mix"),
    "chi2_pvalue": ("vigil.drift.chi2.pvalue", "", "Chi-square p-value of the predicted-class mix"),
    "drift_status": ("vigil.drift.status", "", "Drift status per feature and test: 0 none, 1 possible, 2 drift"),
    "drift_window": ("vigil.drift.window.rows", "{row}", "Live rows the latest drift check compared"),
    "slo_objective": ("vigil.slo.objective", "", "Target fraction of good calls"),
    "slo_remaining": ("vigil.slo.error_budget.remaining", "",
                      "Fraction of the period's error budget left (negative once overspent)"),
    "slo_burn": ("vigil.slo.burn_rate", "", "Error-budget burn rate over a window (1 spends it exactly in the period)"),
    "alerts": ("vigil.alerts.firing", "{alert}", "Alerts firing now, by name and severity"),
}
"""Key → (name, unit, description) of each quality gauge."""


def register_rollout_gauges(instruments: Instruments, *, weights: Readings, rolled_back: Readings) -> None:
    """Per version in a rollout (model, version, role): its share of the split in percent; and 1 per version the
    guard rolled back."""
    instruments.observe("vigil.rollout.weight", "%", "Share of the requests naming no version that each version of "
                        "a rollout answers (a shadow: the share it gets copies of)", _observer(weights))
    instruments.observe("vigil.rollout.rolled_back", "", "1 for a version its rollout's guard took out of the split, "
                        "until a new rollout is set", _observer(rolled_back))
