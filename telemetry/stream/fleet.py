"""A fleet's figures from its members' snapshots: each member's snapshot as plain data (what it publishes through
the store) and back, and the sum of several. Counts and histogram buckets add up exactly; a member that drops out
keeps its counts in the fleet's totals, so totals never go back and rates stay true.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.telemetry.metrics.aggregates import HistogramSeries, Labels, Reading
from vigil.telemetry.stream.frames import AlertSnapshot, Snapshot, VersionSnapshot

RETIRE_SECONDS = 86_400.0
"""How long a member that dropped out is remembered apart (so that it may come back without counting twice);
after that its counts are folded into the fleet's retired totals and its id ignored."""


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def encode_reading(reading: Reading) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, series in reading.items():
        counters, histograms = [], []
        for labels, value in series.items():
            if isinstance(value, HistogramSeries):
                histograms.append([list(labels), value.counts, value.sum, _number(value.min), _number(value.max)])
            else:
                counters.append([list(labels), value])
        out[name] = {"h": histograms} if histograms else {"c": counters}
    return out


def decode_reading(data: Mapping[str, Any]) -> Reading:
    reading: Reading = {}
    for name, series in data.items():
        if "h" in series:
            reading[name] = {tuple(labels): HistogramSeries(list(counts), float(total), float(low), float(high))
                             for labels, counts, total, low, high in series["h"]}
        else:
            reading[name] = {tuple(labels): int(value) for labels, value in series["c"]}
    return reading


def _proto(message: Any) -> str:
    return base64.b64encode(message.SerializeToString()).decode("ascii")


def encode_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as JSON-ready data (exemplars and accelerators are left out: they are the process's own)."""
    return {
        "time_ns": snapshot.time_ns, "state": snapshot.server_state, "cpu": snapshot.cpu_seconds,
        "memory": snapshot.memory_bytes, "in_flight": snapshot.in_flight,
        "reading": encode_reading(snapshot.reading),
        "versions": [asdict(v) for v in snapshot.versions],
        "alerts": [asdict(a) for a in snapshot.alerts],
        "quality": [[model, version, _proto(section)] for (model, version), section in snapshot.quality.items()],
        "rollouts": [_proto(r) for r in snapshot.rollouts],
    }


def decode_snapshot(data: Mapping[str, Any], monotonic: float) -> Snapshot:
    """A published snapshot; `monotonic` is the reader's clock at the time the snapshot was taken."""
    quality = {}
    for model, version, text in data.get("quality", []):
        section = telemetry_pb2.QualityTelemetry()
        section.ParseFromString(base64.b64decode(text))
        quality[(model, version)] = section
    rollouts = []
    for text in data.get("rollouts", []):
        rollout = telemetry_pb2.RolloutTelemetry()
        rollout.ParseFromString(base64.b64decode(text))
        rollouts.append(rollout)
    return Snapshot(time_ns=int(data["time_ns"]), monotonic=monotonic, reading=decode_reading(data["reading"]),
                    versions=[VersionSnapshot(**v) for v in data.get("versions", [])],
                    server_state=str(data.get("state", "SERVING")), cpu_seconds=float(data.get("cpu", 0.0)),
                    memory_bytes=int(data.get("memory", 0)), in_flight=int(data.get("in_flight", 0)),
                    alerts=tuple(AlertSnapshot(**a) for a in data.get("alerts", [])), quality=quality,
                    rollouts=rollouts)


def add_readings(readings: Iterable[Reading]) -> Reading:
    """The sum of several readings: counts per label set, histogram buckets, sums, the lowest min and highest max."""
    total: dict[str, dict[Labels, Any]] = {}
    for reading in readings:
        for name, series in reading.items():
            into = total.setdefault(name, {})
            for labels, value in series.items():
                have = into.get(labels)
                if have is None:
                    into[labels] = (HistogramSeries(list(value.counts), value.sum, value.min, value.max)
                                    if isinstance(value, HistogramSeries) else value)
                elif isinstance(value, HistogramSeries):
                    if len(have.counts) != len(value.counts):
                        continue  # buckets of another layout (a member of another version): not comparable
                    have.counts = [a + b for a, b in zip(have.counts, value.counts, strict=True)]
                    have.sum += value.sum
                    have.min, have.max = min(have.min, value.min), max(have.max, value.max)
                else:
                    into[labels] = have + value
    return total


def add_versions(snapshots: Iterable[Snapshot]) -> list[VersionSnapshot]:
    """Each model version across members: ready where any member has it ready, queues and totals summed."""
    merged: dict[tuple[str, str], VersionSnapshot] = {}
    for snapshot in snapshots:
        for v in snapshot.versions:
            have = merged.get((v.model, v.version))
            if have is None:
                merged[(v.model, v.version)] = v
                continue
            state = have.state if have.state == "READY" or v.state != "READY" else v.state
            merged[(v.model, v.version)] = replace(
                have, state=state, is_default=have.is_default or v.is_default,
                queue_depth=have.queue_depth + v.queue_depth, running=have.running + v.running,
                rows_total=have.rows_total + v.rows_total)
    return [merged[k] for k in sorted(merged)]


class FleetTotals:
    """Sums the members' snapshots into the fleet's, keeping the counts of members that dropped out."""

    def __init__(self, retire_seconds: float = RETIRE_SECONDS) -> None:
        self._retire_seconds = retire_seconds
        self._last: dict[str, Snapshot] = {}
        self._gone: dict[str, tuple[Snapshot, float]] = {}
        self._retired: Reading = {}
        self._retired_cpu = 0.0
        self._retired_ids: set[str] = set()

    def live(self, members: Mapping[str, Snapshot], now: float) -> dict[str, Snapshot]:
        """Note who is here now; the members to show (those retired long ago are ignored)."""
        here = {m: s for m, s in members.items() if m not in self._retired_ids}
        for member in list(self._last):
            if member not in here:
                self._gone[member] = (self._last.pop(member), now)
        for member in here:
            self._gone.pop(member, None)
        self._last.update(here)
        for member, (snapshot, since) in list(self._gone.items()):
            if now - since > self._retire_seconds:
                del self._gone[member]
                self._retired = add_readings([self._retired, snapshot.reading])
                self._retired_cpu += snapshot.cpu_seconds
                self._retired_ids.add(member)
        return here

    def sum(self, members: Sequence[Snapshot], *, local: Snapshot) -> Snapshot:
        """The fleet's snapshot: `members` (the local one among them) plus every member that dropped out. Time,
        state, accelerators, alerts, quality and rollouts are the local snapshot's (the caller replaces them)."""
        gone = [s for s, _ in self._gone.values()]
        return replace(local, reading=add_readings([*(s.reading for s in members), *(s.reading for s in gone),
                                                    self._retired]),
                       versions=add_versions(members),
                       cpu_seconds=sum(s.cpu_seconds for s in (*members, *gone)) + self._retired_cpu,
                       memory_bytes=sum(s.memory_bytes for s in members),
                       in_flight=sum(s.in_flight for s in members))
