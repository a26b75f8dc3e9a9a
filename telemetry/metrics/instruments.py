"""Every metric Vigil records: names, units and descriptions in one place, on the OpenTelemetry metrics API.

Names are OpenTelemetry-style (dotted, units separate); the Prometheus endpoint and the collector's Prometheus
exporter turn them into `vigil_request_duration_seconds`, `vigil_requests_total` and so on. Labels are bounded:
model, version, method, status code, execution provider — never a request or subject id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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


class Instruments:
    """The instruments the call wrapper, the batch hook and the gauges record into.

    Per-request counters and histograms are Vigil's own pre-aggregated ones (`aggregates`), read by every output;
    gauges are OpenTelemetry observables, computed only when metrics are collected.

    >>> instruments = Instruments(meter_provider.get_meter("vigil"))
    >>> instruments.requests.add(("m", "1", "Predict", "OK"))
    """

    def __init__(self, meter: Meter) -> None:
        self.requests = Counter(
            "vigil.requests", "{request}", "Inference calls by model, version, method and gRPC status code",
            ("model", "version", "method", "code"))
        self.request_duration = Histogram(
            "vigil.request.duration", "s", "Time from call received to answer sent", DURATION_BUCKETS,
            ("model", "version", "method"))
        self.queue_duration = Histogram(
            "vigil.queue.duration", "s", "Time a request waited for an instance", DURATION_BUCKETS,
            ("model", "version"))
        self.inference_duration = Histogram(
            "vigil.inference.duration", "s", "Time of one ONNX Runtime run (a batch)", DURATION_BUCKETS,
            ("model", "version"))
        self.batch_size = Histogram(
            "vigil.batch.size", "{row}", "Rows per ONNX Runtime run", BATCH_BUCKETS, ("model", "version"))
        self.predictions = Counter(
            "vigil.predictions", "{row}", "Rows predicted by classifiers, by predicted class",
            ("model", "version", "class"))
        self.confidence = Histogram(
            "vigil.prediction.confidence", "", "Top-class probability of each predicted row", CONFIDENCE_BUCKETS,
            ("model", "version"))
        self.margin = Histogram(
            "vigil.prediction.margin", "", "Top-class minus runner-up probability of each predicted row",
            MARGIN_BUCKETS, ("model", "version"))
        self.feedback = Counter(
            "vigil.feedback", "{row}", "Labelled rows received through Feedback (each request id counted once)",
            ("model", "version"))
        self.feedback_correct = Counter(
            "vigil.feedback.correct", "{row}", "Of the rows counted in vigil.feedback, those predicted right",
            ("model", "version"))
        self.shadow_requests = Counter(
            "vigil.shadow.requests", "{request}",
            "Shadow runs (copies of served requests, answers recorded and never returned) by status code",
            ("model", "version", "code"))
        self.shadow_duration = Histogram(
            "vigil.shadow.duration", "s", "Time of one shadow run, queue included", DURATION_BUCKETS,
            ("model", "version"))
        self.shadow_comparisons = Counter(
            "vigil.shadow.comparisons", "{row}",
            "Rows a shadow version predicted, by whether its class agreed with the served version's (agree, disagree)",
            ("model", "version", "outcome"))
        self.shadow_skipped = Counter(
            "vigil.shadow.skipped", "{request}", "Shadow copies not run because the most allowed were running",
            ("model", "version"))
        self.aggregates = Aggregates(
            [self.requests, self.request_duration, self.queue_duration, self.inference_duration, self.batch_size,
             self.predictions, self.confidence, self.margin, self.feedback, self.feedback_correct, self.shadow_requests,
             self.shadow_duration, self.shadow_comparisons, self.shadow_skipped])
        self._meter = meter

    def observe(self, name: str, unit: str, description: str, callback: Callback) -> None:
        """A gauge computed when metrics are collected (queue depth, model state, process resources)."""
        self._meter.create_observable_gauge(name, callbacks=[callback], unit=unit, description=description)

    def observe_counter(self, name: str, unit: str, description: str, callback: Callback) -> None:
        """A monotonic total computed when metrics are collected (e.g. process CPU seconds)."""
        self._meter.create_observable_counter(name, callbacks=[callback], unit=unit, description=description)
