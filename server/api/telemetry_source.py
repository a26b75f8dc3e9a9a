"""What the Telemetry stream reads from the server: a snapshot per tick, and events when models change."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.api.health import HealthReporter
from vigil.server.models.repository import Model, ModelRepository, ModelVersion, VersionState
from vigil.telemetry.metrics.aggregates import Aggregates
from vigil.telemetry.metrics.gauges import process_cpu_seconds, resident_bytes
from vigil.telemetry.metrics.gpu import GpuReading
from vigil.telemetry.stream.frames import AlertSnapshot, Snapshot, VersionSnapshot
from vigil.telemetry.stream.hub import TelemetryHub

Kind = telemetry_pb2.TelemetryEvent.Kind
_STATE_EVENTS = {VersionState.READY: Kind.MODEL_LOADED, VersionState.FAILED: Kind.MODEL_FAILED,
                 VersionState.UNLOADED: Kind.MODEL_UNLOADED}


def snapshot_reader(repository: ModelRepository, health: HealthReporter, aggregates: Aggregates, *,
                    in_flight: Callable[[], int], gpus: Callable[[], list[GpuReading]] | None,
                    quality: Callable[[], Mapping[tuple[str, str], telemetry_pb2.QualityTelemetry]] | None = None,
                    alerts: Callable[[], Sequence[AlertSnapshot]] | None = None,
                    rollouts: Callable[[], Sequence[telemetry_pb2.RolloutTelemetry]] | None = None
                    ) -> Callable[[], Snapshot]:
    """A function taking one snapshot of the server (called once per tick, and once per new subscriber)."""

    def read() -> Snapshot:
        versions = []
        for model in repository.models:
            default = model.default_version
            for version in model.versions.values():
                batcher = version.batcher
                versions.append(VersionSnapshot(
                    model.name, str(version.version), version.state.value, version is default,
                    batcher.queue_depth if batcher else 0, batcher.in_flight if batcher else 0,
                    batcher.statistics.inferences if batcher else 0))
        return Snapshot(time_ns=time.time_ns(), monotonic=time.monotonic(), reading=aggregates.read(),
                        versions=versions, server_state=health.state, cpu_seconds=sum(process_cpu_seconds()),
                        memory_bytes=resident_bytes(), in_flight=in_flight(), gpus=gpus() if gpus else (),
                        quality=quality() if quality else {}, alerts=alerts() if alerts else (),
                        rollouts=rollouts() if rollouts else ())

    return read


class ModelEvents:
    """A repository listener that turns model state changes into Telemetry events."""

    def __init__(self, hub: TelemetryHub) -> None:
        self._hub = hub
        self._seen: dict[tuple[str, int], tuple[VersionState, ModelVersion]] = {}
        self._defaults: dict[str, int | None] = {}

    async def on_model_change(self, model: Model) -> None:
        for number, version in sorted(model.versions.items()):
            before = self._seen.get((model.name, number))
            self._seen[(model.name, number)] = (version.state, version)
            kind = _STATE_EVENTS.get(version.state)
            if kind is None:
                continue
            if before is None or before[0] is not version.state:
                self._hub.publish(kind, model=model.name, version=str(number), message=version.reason)
            elif before[1] is not version and version.state is not VersionState.UNLOADED:  # loaded again
                self._hub.publish(kind, model=model.name, version=str(number),
                                  message=version.reason or "reloaded from changed files")
        default = model.default_version.version if model.default_version else None
        if model.name in self._defaults and self._defaults[model.name] != default:
            self._hub.publish(Kind.DEFAULT_VERSION_CHANGED, model=model.name, version=str(default or ""),
                              message=f"requests without a version now go to version {default}"
                              if default else "no version is ready")
        self._defaults[model.name] = default
