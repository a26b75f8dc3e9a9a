"""Gauges read when metrics are collected: serving state from the server, and this process's resources."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Observation

from vigil.telemetry.metrics.instruments import (
    ACCURACY,
    ALERTS_FIRING,
    DRIFT_CHI2_PVALUE,
    DRIFT_CHI2_STATISTIC,
    DRIFT_KS_PVALUE,
    DRIFT_KS_STATISTIC,
    DRIFT_PSI,
    DRIFT_STATUS,
    DRIFT_WINDOW_ROWS,
    EXPECTED_ACCURACY,
    INFERENCE_ROWS,
    LABEL_COVERAGE,
    LABEL_DELAY,
    MODEL_LOAD_DURATION,
    MODEL_READY,
    PROCESS_CPU_TIME,
    PROCESS_MEMORY_USAGE,
    QUEUE_DEPTH,
    REQUESTS_IN_FLIGHT,
    ROLLOUT_ROLLED_BACK,
    ROLLOUT_WEIGHT,
    RUNS_IN_FLIGHT,
    SLO_BUDGET_REMAINING,
    SLO_BURN_RATE,
    SLO_OBJECTIVE,
    SPAN_EXPORTER_RESTARTS,
    SPANS_DROPPED,
    STORE_QUEUE,
    Instruments,
)

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
    instruments.observe_counter(INFERENCE_ROWS, _observer(rows))
    instruments.observe(REQUESTS_IN_FLIGHT, _observer(in_flight))
    instruments.observe(QUEUE_DEPTH, _observer(queue_depth))
    instruments.observe(RUNS_IN_FLIGHT, _observer(running))
    instruments.observe(MODEL_READY, _observer(model_ready))
    instruments.observe(MODEL_LOAD_DURATION, _observer(load_seconds))


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

    instruments.observe_counter(PROCESS_CPU_TIME, _observer(cpu))
    instruments.observe(PROCESS_MEMORY_USAGE, _observer(memory))


def register_span_export_counters(instruments: Instruments, *, restarts: Callable[[], int],
                                  dropped: Callable[[], int]) -> None:
    """Restarts of the span exporter process, and spans it never got."""
    instruments.observe_counter(SPAN_EXPORTER_RESTARTS, _observer(lambda: [({}, float(restarts()))]))
    instruments.observe_counter(SPANS_DROPPED, _observer(lambda: [({}, float(dropped()))]))


def register_quality_gauges(instruments: Instruments, readings: Mapping[str, Readings]) -> None:
    """Accuracy, the label-free estimate, drift, SLOs and firing alerts, from the monitors' latest results
    (`readings` keyed as `QUALITY_GAUGES` below; missing keys are not registered)."""
    for key, metric in QUALITY_GAUGES.items():
        if key in readings:
            instruments.observe(metric, _observer(readings[key]))


QUALITY_GAUGES = {
    "accuracy": ACCURACY,
    "label_coverage": LABEL_COVERAGE,
    "label_delay": LABEL_DELAY,
    "store_queue": STORE_QUEUE,
    "expected_accuracy": EXPECTED_ACCURACY,
    "psi": DRIFT_PSI,
    "ks_statistic": DRIFT_KS_STATISTIC,
    "ks_pvalue": DRIFT_KS_PVALUE,
    "chi2_statistic": DRIFT_CHI2_STATISTIC,
    "chi2_pvalue": DRIFT_CHI2_PVALUE,
    "drift_status": DRIFT_STATUS,
    "drift_window": DRIFT_WINDOW_ROWS,
    "slo_objective": SLO_OBJECTIVE,
    "slo_remaining": SLO_BUDGET_REMAINING,
    "slo_burn": SLO_BURN_RATE,
    "alerts": ALERTS_FIRING,
}
"""The quality gauges by the key their readings come under."""


def register_rollout_gauges(instruments: Instruments, *, weights: Readings, rolled_back: Readings) -> None:
    """Per version in a rollout (model, version, role): its share of the split in percent; and 1 per version the
    guard rolled back."""
    instruments.observe(ROLLOUT_WEIGHT, _observer(weights))
    instruments.observe(ROLLOUT_ROLLED_BACK, _observer(rolled_back))
