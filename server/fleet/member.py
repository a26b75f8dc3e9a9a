"""This process as a member of its fleet: it publishes its snapshot every tick, reads the other members', holds or
waits for the fleet's lease, relays the others' events and adopts the rollout states the fleet shares."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.rollouts.splits import Rollouts
from vigil.server.store.base import SharedState
from vigil.telemetry.alerts.watched_values import ServingState
from vigil.telemetry.metrics.aggregates import Reading
from vigil.telemetry.quality.drift_check import drift_counts, drift_from_counts
from vigil.telemetry.quality.monitor import QualityMonitor
from vigil.telemetry.stream.fleet import FleetTotals, decode_snapshot, encode_snapshot
from vigil.telemetry.stream.frames import Snapshot
from vigil.telemetry.stream.hub import TelemetryHub

logger = logging.getLogger(__name__)

LEASE = "leader"
"""The lease whose holder decides for the fleet."""
EVENT_SECONDS = 30.0
"""How long a member keeps publishing an event (the others relay each once)."""
FORGET_SECONDS = 3600.0
"""Summaries of members silent this long are deleted from the store."""
ROLLOUT_PREFIX = "rollout/"


@dataclass
class Peer:
    """Another member, as last read."""

    meta: dict[str, Any]
    snapshot: Snapshot
    seen: float


class Fleet:
    """Membership of this process in its fleet (a fleet of one without a shared store).

    >>> fleet = Fleet(shared, member_id, tick_seconds=1.0, local=read_snapshot, hub=hub)
    >>> await fleet.start()
    >>> fleet.read()            # the fleet's snapshot, for the Telemetry stream
    >>> fleet.is_leader         # whether this process decides for the fleet
    """

    def __init__(self, shared: SharedState | None, member_id: str, *, tick_seconds: float = 1.0,
                 stale_ticks: int = 3, lease_seconds: float = 3.0,
                 local: Callable[[], Snapshot], hub: TelemetryHub | None = None, worker: int = -1,
                 quality: QualityMonitor | None = None) -> None:
        self.shared = shared
        """The store the fleet shares; None: a fleet of one."""
        self.id = member_id
        self.tick_seconds, self.stale_ticks, self.lease_seconds = tick_seconds, stale_ticks, lease_seconds
        self.worker = worker
        self.started = time.time()
        self._local = local
        self._hub = hub
        self._quality = quality
        """Its drift windows are pooled with the other members' (judged by its thresholds and minimum of rows)."""
        self._leading = False
        """Whether the store last said this member holds the lease."""
        self._lease_until = 0.0
        """Until when (monotonic) the lease is surely still this member's: from the start of the exchange that
        renewed it, the lease's length less a tick, so that it is given up here before another member may take it."""
        self._unreachable_since: float | None = None
        self.peers: dict[str, Peer] = {}
        self._totals = FleetTotals()
        self._events: deque[tuple[float, telemetry_pb2.TelemetryEvent]] = deque(maxlen=256)
        self._relayed: dict[str, int] = {}
        """Per other member, the time (ns) of the newest event of theirs already relayed."""
        self.rollouts: Rollouts | None = None
        """The rollouts whose states this member shares with the fleet and adopts from it."""
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._leaving = False
        if hub is not None:
            hub.event_listeners.append(self._on_event)

    @property
    def is_leader(self) -> bool:
        """Whether this process decides for the fleet: it holds the lease (or is a fleet of one). When the store
        cannot be reached for longer than a lease, no member can hold one: each then decides for itself (its alerts
        reach the Alertmanager from each member, which merges alerts with the same labels)."""
        if self.shared is None:
            return True
        now = time.monotonic()
        if self._leading and now < self._lease_until:
            return True
        return self._unreachable_since is not None and now - self._unreachable_since > self.lease_seconds

    @property
    def max_age(self) -> float:
        return self.tick_seconds * self.stale_ticks

    # -- what this member publishes -----------------------------------------------------------------------------

    def _on_event(self, event: telemetry_pb2.TelemetryEvent) -> None:
        self._events.append((time.time(), event))

    def _summary(self, snapshot: Snapshot) -> str:
        now = time.time()
        while self._events and self._events[0][0] < now - EVENT_SECONDS:
            self._events.popleft()
        drift = []
        for quality in self._quality.versions() if self._quality is not None else []:
            if quality.own_drift is not None:
                features, classes = drift_counts(quality.own_drift)
                drift.append([quality.model, quality.version, features, classes])
        return json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(), "worker": self.worker, "leader": self.is_leader,
            "left": self._leaving, "snapshot": encode_snapshot(snapshot), "drift": drift,
            "events": [[e.kind, e.timestamp_unix_nanos, e.model, e.version, e.message] for _, e in self._events],
        })

    # -- the tick -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join: publish, read the others and try for the lease once before serving, then every tick."""
        if self.shared is None:
            return
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="fleet")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                await self.tick()
            except Exception:  # a bad tick must not end membership (the lease then lapses here, by its deadline)
                logger.exception("fleet: a tick failed")

    async def tick(self) -> None:
        shared = self.shared
        if shared is None:
            return
        was_leader = self.is_leader
        summary = self._summary(self._local())
        unshared = self.rollouts.take_unshared() if self.rollouts is not None else {}
        started = time.monotonic()
        try:
            leader, rows, rollouts = await asyncio.to_thread(self._exchange, shared, summary, unshared)
        except Exception as exc:  # the store is away: carry on with this process's own figures, and say so once
            if self.rollouts is not None:  # to share once it returns (unless changed again meanwhile)
                self.rollouts.unshared = {**unshared, **self.rollouts.unshared}
            if not self._failing:
                logger.warning("fleet: cannot reach the store (%s); figures are this process's own until it "
                               "returns", exc)
            self._failing = True
            if self._unreachable_since is None:
                self._unreachable_since = started
            self._drop_stale()
            self._tell_leadership(was_leader)
            return
        if self._failing:
            logger.info("fleet: the store is reachable again")
        self._failing = False
        self._unreachable_since = None
        self._leading = leader
        self._lease_until = started + self.lease_seconds - self.tick_seconds
        self._tell_leadership(was_leader)
        self._take(rows)
        self._merge_drift()
        if self.rollouts is not None:
            self.rollouts.adopt(rollouts)

    def _exchange(self, shared: SharedState, summary: str, unshared: dict[str, dict[str, Any] | None]
                  ) -> tuple[bool, list[tuple[str, float, float, str]], dict[str, dict[str, Any] | None]]:
        """Off the event loop: share rollout changes, publish, renew or try for the lease, read the members and the
        rollout states."""
        self._publish(shared, summary, unshared)
        leader = shared.hold_lease(LEASE, self.id, self.lease_seconds)
        if leader:
            shared.leave("", stale_after=FORGET_SECONDS)  # sweep summaries of members long gone
        rows = shared.members(self.max_age)
        rollouts = {key.removeprefix(ROLLOUT_PREFIX): json.loads(value)
                    for key, value, _ in shared.values(ROLLOUT_PREFIX)}
        return leader, rows, rollouts

    def _publish(self, shared: SharedState, summary: str, unshared: dict[str, dict[str, Any] | None]) -> None:
        """Share the rollout changes made here, then this member's summary (blocking)."""
        for model, state in unshared.items():
            share_rollout(shared, model, state)
        shared.publish(self.id, self.started, summary)

    def _tell_leadership(self, was_leader: bool) -> None:
        leader = self.is_leader
        if leader != was_leader:
            logger.info("fleet: %s", "this member now decides for the fleet (alert rules, rollout guard)"
                        if leader else "this member no longer decides for the fleet")

    def _take(self, rows: Sequence[tuple[str, float, float, str]]) -> None:
        now = time.monotonic()
        seen = set()
        for member, started, at, text in rows:
            if member == self.id:
                continue
            peer = self.peers.get(member)
            if peer is not None and peer.seen == at:
                seen.add(member)
                continue
            try:
                meta = json.loads(text)
                if meta.get("left") and peer is None:
                    continue  # it left before this member first saw it
                snapshot = decode_snapshot(meta.pop("snapshot"), now)
            except Exception as exc:
                logger.warning("fleet: the summary of member %s cannot be read: %s", member, exc)
                continue
            meta["started"] = started
            self.peers[member] = Peer(meta, snapshot, at)
            seen.add(member)
            self._relay(member, meta.get("events", []))
        for member in set(self.peers) - seen:
            del self.peers[member]

    def _drop_stale(self) -> None:
        cutoff = time.time() - self.max_age
        for member in [m for m, p in self.peers.items() if p.seen < cutoff]:
            del self.peers[member]

    def _relay(self, member: str, events: list[list[Any]]) -> None:
        newest = self._relayed.get(member, 0)
        for kind, at, model, version, message in events:
            if at > newest and self._hub is not None:
                self._hub.relay(telemetry_pb2.TelemetryEvent(kind=kind, timestamp_unix_nanos=at, model=model,
                                                             version=version, message=message, member=member))
            newest = max(newest, at)
        self._relayed[member] = newest
        for gone in set(self._relayed) - set(self.peers) - {member}:
            del self._relayed[gone]

    def _merge_drift(self) -> None:
        """Where other members report drift of a version: the fleet's drift from the bin counts of all (also when
        this member has too few rows of its own to judge)."""
        monitor = self._quality
        if monitor is None:
            return
        min_rows = monitor.limits.drift_min_rows
        for quality in monitor.versions():
            own, profile = quality.own_drift, quality.profile
            if profile is None:
                continue
            if own is not None:
                features, classes = drift_counts(own)
            else:
                features, classes = [[0] * (len(f.edges) + 1) for f in profile.features], [0] * len(profile.labels)
            feature_sums = [np.asarray(f, np.int64) for f in features]
            class_sums = np.asarray(classes, np.int64)
            others = 0
            for peer in self.peers.values():
                for model, version, their_features, their_classes in peer.meta.get("drift", []):
                    if (model, version) != (quality.model, quality.version) or len(their_classes) != len(classes):
                        continue
                    if [len(f) for f in their_features] != [len(f) for f in features]:
                        continue
                    feature_sums = [a + np.asarray(b, np.int64) for a, b in zip(feature_sums, their_features,
                                                                                   strict=True)]
                    class_sums = class_sums + np.asarray(their_classes, np.int64)
                    others += 1
            merged = (drift_from_counts(profile, feature_sums, class_sums, monitor.thresholds, now=time.time(),
                                        min_rows=min_rows) if others else None)
            if merged is not None:
                quality.fleet_drift = quality.drift = merged
            elif quality.fleet_drift is not None:  # pooled no longer: back to this member's own, if judged
                quality.fleet_drift = None
                quality.drift = own if own is not None and own.window_rows >= min_rows else None

    # -- what readers see ---------------------------------------------------------------------------------------

    def read(self) -> Snapshot:
        """The fleet's snapshot: counts summed over every member (and those that left), alerts and rollouts as the
        leader sees them, this process's own quality and accelerators, and each member's own snapshot."""
        local = self._local()
        members = {self.id: local, **{m: p.snapshot for m, p in self.peers.items()}}
        live = self._totals.live(members, time.monotonic())
        fleet = self._totals.sum(list(live.values()), local=local)
        leader = next((p for p in self.peers.values() if p.meta.get("leader")), None)
        alerts, rollouts = local.alerts, local.rollouts
        if not self.is_leader and leader is not None:
            alerts, rollouts = leader.snapshot.alerts, leader.snapshot.rollouts
        serving = any(s.server_state == "SERVING" for s in live.values())
        return replace(fleet, alerts=alerts, rollouts=rollouts, members=live, fleet=self.members(local),
                       server_state="SERVING" if serving else local.server_state)

    def reading(self) -> Reading:
        """The fleet's cumulative counts (what alert rules and the rollout guard judge)."""
        return self.read().reading

    def serving(self) -> list[ServingState]:
        """Each model version as alert rules see the fleet serve it: ready only where every member that has it
        has it ready (a version failing on one replica of four is not ready), queues summed."""
        fleet = self.read()
        ready: dict[tuple[str, str], bool] = {}
        for snapshot in fleet.members.values():
            for v in snapshot.versions:
                ready[(v.model, v.version)] = ready.get((v.model, v.version), True) and v.state == "READY"
        return [ServingState(v.model, v.version, ready.get((v.model, v.version), False), v.queue_depth)
                for v in fleet.versions]

    def members(self, local: Snapshot) -> list[telemetry_pb2.FleetMember]:
        """Who the fleet's members are, this one (as `local` shows it) among them."""
        own = telemetry_pb2.FleetMember(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), worker=self.worker,
            state=local.server_state, started_unix=self.started, seen_unix=time.time(),
            leader=self.is_leader, local=True)
        out = [own]
        for member, peer in self.peers.items():
            meta = peer.meta
            out.append(telemetry_pb2.FleetMember(
                id=member, host=str(meta.get("host", "")), pid=int(meta.get("pid", 0)),
                worker=int(meta.get("worker", -1)), state="LEFT" if meta.get("left") else peer.snapshot.server_state,
                started_unix=float(meta.get("started", 0.0)), seen_unix=peer.seen, leader=bool(meta.get("leader")),
                local=False))
        return sorted(out, key=lambda m: m.id)

    # -- leaving ------------------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Publish a last summary (the others keep its counts) and hand the lease back."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        shared = self.shared
        if shared is None:
            return
        self._leaving = True
        summary = self._summary(self._local())
        unshared = self.rollouts.take_unshared() if self.rollouts is not None else {}

        def leave() -> None:  # a rollout change made in the last tick reaches the fleet too
            self._publish(shared, summary, unshared)
            shared.release_lease(LEASE, self.id)

        try:
            await asyncio.wait_for(asyncio.to_thread(leave), timeout=5.0)
        except Exception as exc:
            logger.warning("fleet: could not say goodbye through the store: %s", exc)
        self._leading, self._lease_until, self._unreachable_since = False, 0.0, None


def share_rollout(shared: SharedState, model: str, state: dict[str, Any] | None) -> None:
    """Put a model's rollout state (None: cleared) where every member reads it."""
    at = int(state["revision"].split(":", 1)[0]) / 1e9 if state is not None else None  # when it changed
    shared.put(ROLLOUT_PREFIX + model, json.dumps(state), at)
