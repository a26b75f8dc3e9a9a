"""Every metric Vigil records: names, units and descriptions in one place, on the OpenTelemetry metrics API.

Names are OpenTelemetry-style (dotted, units separate); the Prometheus endpoint and the collector's Prometheus
exporter turn them into `vigil_request_duration_seconds`, `vigil_requests_total` and so on. Labels are bounded:
model, version, method, status code, execution provider — never a request or subject id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from vigil.telemetry.metrics.aggregates import Aggregates, Counter, Histogram

DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""Seconds: from 100 µs (a tabular row) to 10 s (a large batch on a slow model)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Rows per ONNX Runtime run."""
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 1.0)
"""Top-class probability: finer near 1, where most confident predictions fall."""
MARGIN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
"""Top-class minus runner-up probability."""

Callback = Callable[[CallbackOptions], Iterable[Observation]]


class MetricSpec(NamedTuple):
    """A metric's OpenTelemetry name, unit and description, defined once here; everything else refers to it by
    constant (the Prometheus names follow from name and unit)."""

    name: str
    unit: str
    description: str


# Recorded per call and per run, pre-aggregated (`Instruments` below).
REQUESTS = MetricSpec("vigil.requests", "{request}", "Inference calls by model, version, method and gRPC status code")
REQUEST_DURATION = MetricSpec("vigil.request.duration", "s", "Time from call received to answer sent")
QUEUE_DURATION = MetricSpec("vigil.queue.duration", "s", "Time a request waited for an instance")
INFERENCE_DURATION = MetricSpec("vigil.inference.duration", "s", "Time of one ONNX Runtime run (a batch)")
BATCH_SIZE = MetricSpec("vigil.batch.size", "{row}", "Rows per ONNX Runtime run")
PREDICTIONS = MetricSpec("vigil.predictions", "{row}", "Rows predicted by classifiers, by predicted class")
CONFIDENCE = MetricSpec("vigil.prediction.confidence", "", "Top-class probability of each predicted row")
MARGIN = MetricSpec("vigil.prediction.margin", "", "Top-class minus runner-up probability of each predicted row")
FEEDBACK = MetricSpec("vigil.feedback", "{row}",
                      "Labelled rows received through Feedback (each request id counted once)")
FEEDBACK_CORRECT = MetricSpec("vigil.feedback.correct", "{row}",
                              "Of the rows counted in vigil.feedback, those predicted right")
STORE_DROPPED_ROWS = MetricSpec("vigil.store.dropped_rows", "{request}",
                                "Predictions not logged to the store: its write queue was full, or it stayed down")
SHADOW_REQUESTS = MetricSpec(
    "vigil.shadow.requests", "{request}",
    "Shadow runs (copies of served requests, answers recorded and never returned) by status code")
SHADOW_DURATION = MetricSpec("vigil.shadow.duration", "s", "Time of one shadow run, queue included")
SHADOW_COMPARISONS = MetricSpec(
    "vigil.shadow.comparisons", "{row}",
    "Rows a shadow version predicted, by whether its class agreed with the served version's (agree, disagree)")
SHADOW_SKIPPED = MetricSpec("vigil.shadow.skipped", "{request}",
                            "Shadow copies not run because the most allowed were running")

# Read when metrics are collected (`gauges`, `gpu`).
INFERENCE_ROWS = MetricSpec("vigil.inference.rows", "{row}", "Rows inferred by successful runs")
REQUESTS_IN_FLIGHT = MetricSpec("vigil.requests.in_flight", "{request}", "Calls being handled now")
QUEUE_DEPTH = MetricSpec("vigil.queue.depth", "{request}", "Requests waiting for an instance")
RUNS_IN_FLIGHT = MetricSpec("vigil.runs.in_flight", "{run}", "ONNX Runtime runs executing now")
MODEL_READY = MetricSpec("vigil.model.ready", "", "1 when the model version serves, else 0")
MODEL_LOAD_DURATION = MetricSpec("vigil.model.load.duration", "s", "Seconds the version took to load and warm up")
PROCESS_CPU_TIME = MetricSpec("process.cpu.time", "s", "CPU seconds used by the server process")
PROCESS_MEMORY_USAGE = MetricSpec("process.memory.usage", "By", "Resident memory of the server process")
ACCURACY = MetricSpec("vigil.accuracy", "",
                      "Fraction of labelled rows predicted right: the count window, the time window, and the "
                      "predictions of the last hour, day and week")
LABEL_COVERAGE = MetricSpec("vigil.label.coverage", "",
                            "Share of the rows predicted in a window (hour, day, week) that have labels")
LABEL_DELAY = MetricSpec("vigil.label.delay", "s",
                         "Seconds from prediction to label of the rows labelled in a window, by percentile")
STORE_QUEUE = MetricSpec("vigil.store.queue", "{request}", "Predictions waiting to be written to the store")
EXPECTED_ACCURACY = MetricSpec("vigil.accuracy.expected", "",
                               "Label-free accuracy estimate: mean calibrated confidence of recent predictions")
DRIFT_PSI = MetricSpec("vigil.drift.psi", "", "Population stability index of a feature against the reference profile")
DRIFT_KS_STATISTIC = MetricSpec("vigil.drift.ks.statistic", "", "Two-sample Kolmogorov-Smirnov statistic of a feature")
DRIFT_KS_PVALUE = MetricSpec("vigil.drift.ks.pvalue", "", "Kolmogorov-Smirnov p-value of a feature")
DRIFT_CHI2_STATISTIC = MetricSpec("vigil.drift.chi2.statistic", "", "Chi-square statistic of the predicted-class mix")
DRIFT_CHI2_PVALUE = MetricSpec("vigil.drift.chi2.pvalue", "", "Chi-square p-value of the predicted-class mix")
DRIFT_STATUS = MetricSpec("vigil.drift.status", "", "Drift status per feature and test: 0 none, 1 possible, 2 drift")
DRIFT_WINDOW_ROWS = MetricSpec("vigil.drift.window.rows", "{row}", "Live rows the latest drift check compared")
SLO_OBJECTIVE = MetricSpec("vigil.slo.objective", "", "Target fraction of good calls")
SLO_BUDGET_REMAINING = MetricSpec("vigil.slo.error_budget.remaining", "",
                                  "Fraction of the period's error budget left (negative once overspent)")
SLO_BURN_RATE = MetricSpec("vigil.slo.burn_rate", "",
                           "Error-budget burn rate over a window (1 spends it exactly in the period)")
ALERTS_FIRING = MetricSpec("vigil.alerts.firing", "{alert}", "Alerts firing now, by name and severity")
ROLLOUT_WEIGHT = MetricSpec(
    "vigil.rollout.weight", "%",
    "Share of the requests naming no version that each version of a rollout answers (a shadow: the share it gets "
    "copies of)")
ROLLOUT_ROLLED_BACK = MetricSpec(
    "vigil.rollout.rolled_back", "", "1 for a version its rollout's guard took out of the split, until a new rollout "
    "is set")
GPU_UTILIZATION = MetricSpec("vigil.gpu.utilization", "1", "GPU busy fraction over the last sample period")
GPU_MEMORY_USED = MetricSpec("vigil.gpu.memory.used", "By", "GPU memory in use")
GPU_MEMORY_TOTAL = MetricSpec("vigil.gpu.memory.total", "By", "GPU memory in all")
GPU_POWER_USAGE = MetricSpec("vigil.gpu.power.usage", "W", "GPU power draw")
GPU_METRICS = (GPU_UTILIZATION, GPU_MEMORY_USED, GPU_MEMORY_TOTAL, GPU_POWER_USAGE)
"""Registered only where NVML finds a GPU."""

# Written by the supervisor of `vigil serve --workers N` on the host's page, beside its workers' merged metrics.
SPAN_EXPORTER_RESTARTS = MetricSpec("vigil.span_exporter.restarts", "{restart}",
                                    "Times the span exporter process died and was started again")
SPANS_DROPPED = MetricSpec("vigil.spans.dropped", "{span}",
                           "Spans never exported: the exporter process's buffer was full or the process was down")
WORKER_RESTARTS = MetricSpec("vigil.worker.restarts", "{restart}",
                             "Times the supervisor started a worker process again after it died, by worker")
WORKER_READY = MetricSpec("vigil.worker.ready", "",
                          "1 while a worker process serves (listening, models loaded, not draining), else 0")


class Instruments:
    """The instruments the call wrapper, the batch hook and the gauges record into.

    Per-request counters and histograms are Vigil's own pre-aggregated ones (`aggregates`), read by every output;
    gauges are OpenTelemetry observables, computed only when metrics are collected.

    >>> instruments = Instruments(meter_provider.get_meter("vigil"))
    >>> instruments.requests.add(("m", "1", "Predict", "OK"))
    """

    def __init__(self, meter: Meter) -> None:
        self.requests = Counter(*REQUESTS, ("model", "version", "method", "code"))
        self.request_duration = Histogram(*REQUEST_DURATION, DURATION_BUCKETS, ("model", "version", "method"))
        self.queue_duration = Histogram(*QUEUE_DURATION, DURATION_BUCKETS, ("model", "version"))
        self.inference_duration = Histogram(*INFERENCE_DURATION, DURATION_BUCKETS, ("model", "version"))
        self.batch_size = Histogram(*BATCH_SIZE, BATCH_BUCKETS, ("model", "version"))
        self.predictions = Counter(*PREDICTIONS, ("model", "version", "class"))
        self.confidence = Histogram(*CONFIDENCE, CONFIDENCE_BUCKETS, ("model", "version"))
        self.margin = Histogram(*MARGIN, MARGIN_BUCKETS, ("model", "version"))
        self.feedback = Counter(*FEEDBACK, ("model", "version"))
        self.feedback_correct = Counter(*FEEDBACK_CORRECT, ("model", "version"))
        self.store_dropped = Counter(*STORE_DROPPED_ROWS, ())
        self.shadow_requests = Counter(*SHADOW_REQUESTS, ("model", "version", "code"))
        self.shadow_duration = Histogram(*SHADOW_DURATION, DURATION_BUCKETS, ("model", "version"))
        self.shadow_comparisons = Counter(*SHADOW_COMPARISONS, ("model", "version", "outcome"))
        self.shadow_skipped = Counter(*SHADOW_SKIPPED, ("model", "version"))
        self.aggregates = Aggregates(
            [self.requests, self.request_duration, self.queue_duration, self.inference_duration, self.batch_size,
             self.predictions, self.confidence, self.margin, self.feedback, self.feedback_correct, self.shadow_requests,
             self.shadow_duration, self.shadow_comparisons, self.shadow_skipped, self.store_dropped])
        self._meter = meter

    def observe(self, metric: MetricSpec, callback: Callback) -> None:
        """A gauge computed when metrics are collected (queue depth, model state, process resources)."""
        self._meter.create_observable_gauge(metric.name, callbacks=[callback], unit=metric.unit,
                                            description=metric.description)

    def observe_counter(self, metric: MetricSpec, callback: Callback) -> None:
        """A monotonic total computed when metrics are collected (e.g. process CPU seconds)."""
        self._meter.create_observable_counter(metric.name, callbacks=[callback], unit=metric.unit,
                                              description=metric.description)
