"""Every metric Vigil records: names, units and descriptions in one place, on the OpenTelemetry metrics API.

Names are OpenTelemetry-style (dotted, units separate); the Prometheus endpoint and the collector's Prometheus
exporter turn them into `vigil_request_duration_seconds`, `vigil_requests_total` and so on. Labels are bounded:
model, version, method, status code, execution provider — never a request or subject id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""Seconds: from 100 µs (a tabular row) to 10 s (a large batch on a slow model)."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Rows per ONNX Runtime run."""

Callback = Callable[[CallbackOptions], Iterable[Observation]]


class Instruments:
    """The instruments the interceptor, the batch hook and the gauges record into.

    >>> instruments = Instruments(meter_provider.get_meter("vigil"))
    >>> instruments.requests.add(1, {"model": "m", "version": "1", "method": "Predict", "code": "OK"})
    """

    def __init__(self, meter: Meter) -> None:
        self.request_counts: dict[tuple[str, str, str, str], int] = {}
        """Calls by (model, version, method, code): counted in Python, read by an observable counter, because
        an SDK counter add costs several microseconds on the hot path."""
        meter.create_observable_counter(
            "vigil.requests", callbacks=[self._observe_requests], unit="{request}",
            description="Inference calls by model, version, method and gRPC status code")
        self.request_duration = meter.create_histogram(
            "vigil.request.duration", unit="s", description="Time from call received to answer sent",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.queue_duration = meter.create_histogram(
            "vigil.queue.duration", unit="s", description="Time a request waited for an instance",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.inference_duration = meter.create_histogram(
            "vigil.inference.duration", unit="s", description="Time of one ONNX Runtime run (a batch)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.batch_size = meter.create_histogram(
            "vigil.batch.size", unit="{row}", description="Rows per ONNX Runtime run",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS)
        self._meter = meter

    def count_request(self, model: str, version: str, method: str, code: str) -> None:
        key = (model, version, method, code)
        self.request_counts[key] = self.request_counts.get(key, 0) + 1

    def _observe_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"model": m, "version": v, "method": meth, "code": c})
                for (m, v, meth, c), n in list(self.request_counts.items())]

    def observe(self, name: str, unit: str, description: str, callback: Callback) -> None:
        """A gauge computed when metrics are collected (queue depth, model state, process resources)."""
        self._meter.create_observable_gauge(name, callbacks=[callback], unit=unit, description=description)

    def observe_counter(self, name: str, unit: str, description: str, callback: Callback) -> None:
        """A monotonic total computed when metrics are collected (e.g. process CPU seconds)."""
        self._meter.create_observable_counter(name, callbacks=[callback], unit=unit, description=description)
