"""Telemetry frames: what changed between two snapshots of the server, as `vigil.v1.TelemetryFrame` parts.

A snapshot holds cumulative totals (the same aggregates the metrics endpoints read) and the serving state at one
instant; a frame is the difference of two snapshots. Percentiles are estimated from histogram buckets, linearly
within the bucket the rank falls in, as Prometheus's `histogram_quantile` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.telemetry.metrics.aggregates import HistogramSeries, Labels, Reading
from vigil.telemetry.metrics.gpu import GpuReading
from vigil.telemetry.metrics.instruments import (
    BATCH_SIZE,
    CONFIDENCE,
    INFERENCE_DURATION,
    MARGIN,
    PREDICTIONS,
    QUEUE_DURATION,
    REQUEST_DURATION,
    REQUESTS,
)


@dataclass(frozen=True)
class VersionSnapshot:
    """One model version's serving state at the snapshot."""

    model: str
    version: str
    state: str
    is_default: bool = False
    queue_depth: int = 0
    running: int = 0
    rows_total: int = 0


@dataclass(frozen=True)
class AlertSnapshot:
    name: str
    severity: str
    model: str
    version: str
    summary: str
    since_unix_nanos: int
    value: float
    signal: str = ""
    value_text: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Everything a frame is computed from, read once per tick."""

    time_ns: int
    """Unix time."""
    monotonic: float
    reading: Reading
    versions: Sequence[VersionSnapshot] = ()
    server_state: str = "SERVING"
    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    in_flight: int = 0
    gpus: Sequence[GpuReading] = ()
    alerts: Sequence[AlertSnapshot] = field(default_factory=tuple)
    quality: Mapping[tuple[str, str], telemetry_pb2.QualityTelemetry] = field(default_factory=dict)
    """Per monitored classifier version: the parts of its quality section that are not interval counts."""
    rollouts: Sequence[telemetry_pb2.RolloutTelemetry] = ()
    """Per model with a rollout: its latest side-by-side comparison."""
    members: Mapping[str, Snapshot] = field(default_factory=dict)
    """Of a fleet's snapshot: each member's own, by id."""
    fleet: Sequence[telemetry_pb2.FleetMember] = ()
    """Of a fleet's snapshot: who its members are."""


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float:
    """The q-quantile (0..1) of observations counted in buckets with inclusive upper `bounds` (the last count is
    above every bound): linear within the bucket, from 0 for the first one; the last bound for the overflow."""
    total = sum(counts)
    if total == 0:
        return 0.0
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index >= len(bounds):
                return float(bounds[-1])
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * max(rank - below, 0.0) / count
        below += count
    return float(bounds[-1])


def _histogram_delta(now: HistogramSeries | None, then: HistogramSeries | None, size: int) -> tuple[list[int], float]:
    if now is None:
        return [0] * size, 0.0
    if then is None:
        return list(now.counts), now.sum
    return [a - b for a, b in zip(now.counts, then.counts, strict=True)], now.sum - then.sum


def latency(bounds: Sequence[float], counts: Sequence[int], total_seconds: float) -> telemetry_pb2.LatencySummary:
    count = sum(counts)
    if count == 0:
        return telemetry_pb2.LatencySummary()
    return telemetry_pb2.LatencySummary(
        count=count, mean_ms=total_seconds / count * 1e3, p50_ms=quantile(0.5, bounds, counts) * 1e3,
        p90_ms=quantile(0.9, bounds, counts) * 1e3, p99_ms=quantile(0.99, bounds, counts) * 1e3)


class _Merged:
    """Bucket counts of several series (e.g. all methods of one model version) added together."""

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0

    def add(self, counts: Sequence[int], total: float) -> None:
        self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
        self.sum += total


def counts(reading: Reading, name: str) -> dict[Labels, int]:
    """A counter's totals in a reading."""
    return {labels: int(n) for labels, n in reading.get(name, {}).items() if isinstance(n, int)}


def by_version(now: Reading, then: Reading | None, name: str, bounds: Sequence[float]
               ) -> dict[tuple[str, str], _Merged]:
    """Per (model, version): the interval's bucket counts of histogram `name`, summed over other labels."""
    series_now = now.get(name, {})
    series_then = (then or {}).get(name, {})
    merged: dict[tuple[str, str], _Merged] = {}
    for labels, series in series_now.items():
        assert isinstance(series, HistogramSeries)
        earlier = series_then.get(labels)
        counts, total = _histogram_delta(series, earlier if isinstance(earlier, HistogramSeries) else None,
                                         len(bounds) + 1)
        key = (labels[0], labels[1])
        merged.setdefault(key, _Merged(len(bounds) + 1)).add(counts, total)
    return merged


def model_frames(now: Snapshot, then: Snapshot | None, bounds: Mapping[str, Sequence[float]],
                 start_monotonic: float) -> list[telemetry_pb2.ModelTelemetry]:
    """Per model version, sorted: counts, rates, latency summaries, batch sizes and serving state."""
    seconds = max(now.monotonic - then.monotonic, 1e-9) if then is not None else 0.0
    uptime = max(now.monotonic - start_monotonic, 1e-9)
    requests_now = counts(now.reading, REQUESTS.name)
    requests_then = counts(then.reading, REQUESTS.name) if then is not None else {}
    calls: dict[tuple[str, str], list[int]] = {}
    errors: dict[tuple[str, str], dict[str, list[int]]] = {}
    for labels, total in requests_now.items():
        model, version, _method, code = labels
        earlier = requests_then.get(labels, 0)
        count = calls.setdefault((model, version), [0, 0])
        count[0] += total - earlier
        count[1] += total
        if code != "OK":
            by_code = errors.setdefault((model, version), {}).setdefault(code, [0, 0])
            by_code[0] += total - earlier
            by_code[1] += total
    request = by_version(now.reading, then.reading if then else None, REQUEST_DURATION.name,
                          bounds[REQUEST_DURATION.name])
    queue = by_version(now.reading, then.reading if then else None, QUEUE_DURATION.name,
                        bounds[QUEUE_DURATION.name])
    inference = by_version(now.reading, then.reading if then else None, INFERENCE_DURATION.name,
                            bounds[INFERENCE_DURATION.name])
    batches = by_version(now.reading, then.reading if then else None, BATCH_SIZE.name, bounds[BATCH_SIZE.name])
    rows_then = {(v.model, v.version): v.rows_total for v in (then.versions if then else ())}
    quality = _quality_counts(now, then, bounds) if now.quality else {}
    frames = []
    for state in sorted(now.versions, key=lambda v: (v.model, _version_order(v.version))):
        key = (state.model, state.version)
        interval_calls, total_calls = calls.get(key, [0, 0])
        rows = state.rows_total - rows_then.get(key, state.rows_total if then is not None else 0)
        frame = telemetry_pb2.ModelTelemetry(
            model=state.model, version=state.version, state=state.state, is_default=state.is_default,
            requests=interval_calls, requests_total=total_calls, rows=max(rows, 0), rows_total=state.rows_total,
            requests_per_second=interval_calls / seconds if seconds else 0.0,
            rows_per_second=max(rows, 0) / seconds if seconds else 0.0,
            requests_per_second_since_start=total_calls / uptime,
            queue_depth=state.queue_depth, running=state.running,
        )
        for code, (in_interval, total) in sorted(errors.get(key, {}).items()):
            if in_interval:
                frame.errors[code] = in_interval
            frame.errors_total[code] = total
        for target, merged, name in ((frame.request_latency, request, REQUEST_DURATION.name),
                                     (frame.queue_latency, queue, QUEUE_DURATION.name),
                                     (frame.inference_latency, inference, INFERENCE_DURATION.name)):
            part = merged.get(key)
            if part is not None:
                target.CopyFrom(latency(bounds[name], part.counts, part.sum))
        batch = batches.get(key)
        frame.batch_size.bounds.extend(bounds[BATCH_SIZE.name])
        if batch is not None:
            frame.batch_size.counts.extend(batch.counts)
            runs = sum(batch.counts)
            frame.batch_size.mean = batch.sum / runs if runs else 0.0
        else:
            frame.batch_size.counts.extend([0] * (len(bounds[BATCH_SIZE.name]) + 1))
        section = now.quality.get(key)
        if section is not None:
            frame.quality.CopyFrom(section)
            frame.quality.MergeFrom(quality.get(key, telemetry_pb2.QualityTelemetry()))
        frames.append(frame)
    return frames


def _distribution(bounds: Sequence[float], merged: _Merged | None) -> telemetry_pb2.Distribution:
    counts = merged.counts if merged is not None else [0] * (len(bounds) + 1)
    total = sum(counts)
    return telemetry_pb2.Distribution(bounds=bounds, counts=counts,
                                      mean=merged.sum / total if merged is not None and total else 0.0)


def _quality_counts(now: Snapshot, then: Snapshot | None, bounds: Mapping[str, Sequence[float]]
                    ) -> dict[tuple[str, str], telemetry_pb2.QualityTelemetry]:
    """Per version: predictions by class (interval and total), and confidence and margin over the interval."""
    earlier = then.reading if then is not None else None
    confidence = by_version(now.reading, earlier, CONFIDENCE.name,
                             bounds[CONFIDENCE.name])
    margin = by_version(now.reading, earlier, MARGIN.name, bounds[MARGIN.name])
    predictions_then = counts(earlier, PREDICTIONS.name) if earlier is not None else {}
    out: dict[tuple[str, str], telemetry_pb2.QualityTelemetry] = {}
    for key in now.quality:
        out[key] = telemetry_pb2.QualityTelemetry(
            confidence=_distribution(bounds[CONFIDENCE.name], confidence.get(key)),
            margin=_distribution(bounds[MARGIN.name], margin.get(key)))
    for labels, total in counts(now.reading, PREDICTIONS.name).items():
        section = out.get((labels[0], labels[1]))
        if section is not None:
            section.predictions_total[labels[2]] = total
            section.predictions[labels[2]] = total - predictions_then.get(labels, 0)
    return out


def unattributed_errors(now: Snapshot) -> dict[str, int]:
    """Failed calls that named no model the server knows, by code (cumulative)."""
    known = {(v.model, v.version) for v in now.versions}
    out: dict[str, int] = {}
    for labels, total in counts(now.reading, REQUESTS.name).items():
        model, version, _method, code = labels
        if code != "OK" and (model, version) not in known:
            out[code] = out.get(code, 0) + total
    return out


def server_frame(now: Snapshot, then: Snapshot | None) -> telemetry_pb2.ServerTelemetry:
    seconds = now.monotonic - then.monotonic if then is not None else 0.0
    cpu = (now.cpu_seconds - then.cpu_seconds) / seconds * 100 if then is not None and seconds > 0 else 0.0
    frame = telemetry_pb2.ServerTelemetry(
        state=now.server_state, cpu_percent=max(cpu, 0.0), memory_bytes=now.memory_bytes, in_flight=now.in_flight,
        gpus=[telemetry_pb2.GpuTelemetry(index=g.index, name=g.name, utilization=g.utilization,
                                         memory_used_bytes=g.memory_used_bytes,
                                         memory_total_bytes=g.memory_total_bytes, power_watts=g.power_watts)
              for g in now.gpus])
    for code, total in sorted(unattributed_errors(now).items()):
        frame.unattributed_errors_total[code] = total
    return frame


def alert_frames(now: Snapshot) -> list[telemetry_pb2.Alert]:
    return [telemetry_pb2.Alert(name=a.name, severity=a.severity, model=a.model, version=a.version,
                                summary=a.summary, since_unix_nanos=a.since_unix_nanos, value=a.value,
                                signal=a.signal, value_text=a.value_text)
            for a in now.alerts]


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)

