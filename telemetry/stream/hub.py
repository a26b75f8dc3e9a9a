"""The Telemetry stream's engine: one snapshot per tick, frames shared by every subscriber, events to each once.

Every tick (100 ms) the hub reads one snapshot of the server. A subscriber with an interval of k ticks is due on
ticks that are multiples of k, so all subscribers with the same interval share one frame, computed and serialized
once per tick for each choice of models and sections; each subscriber's own fields (sequence, dropped frames,
events) are serialized separately and appended (protobuf messages concatenate). Only the snapshots some interval
still needs are kept.

A subscriber never blocks the hub: it holds at most one frame, the newest (an older unsent one is counted as
dropped), and its events in order. Events are bounded per subscriber; past the bound the oldest go, and the
sequence numbers of the ones delivered show the gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.telemetry.export.wire import length_delimited, tag, varint
from vigil.telemetry.stream.errors import InvalidSubscription, TooManySubscribers
from vigil.telemetry.stream.frames import Snapshot, alert_frames, model_frames, server_frame

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.1
MIN_INTERVAL_MS, MAX_INTERVAL_MS, DEFAULT_INTERVAL_MS = 100, 60_000, 1000
SECTIONS = frozenset({"models", "quality", "server", "events", "alerts", "rollouts"})
MAX_PENDING_EVENTS = 10_000
"""Events kept for one subscriber that is not reading."""

Event = telemetry_pb2.TelemetryEvent
EventKind: TypeAlias = int
"""A `TelemetryEvent.Kind` value."""


class Subscription:
    """One subscriber's frames: `async for frame in subscription` yields serialized `TelemetryFrame`s."""

    def __init__(self, hub: TelemetryHub, interval_ticks: int, models: frozenset[str], sections: frozenset[str],
                 member: str = "") -> None:
        self._hub = hub
        self.interval_ticks = interval_ticks
        self.models = models
        self.sections = sections
        self.member = member
        """The fleet member whose figures it gets; "" for the whole fleet."""
        self.key = (interval_ticks, models, sections, member)
        self._frame: bytes | None = None
        self._events: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        self.baseline: Snapshot | None = None
        """The server as it was when the subscriber arrived, for its first frame."""
        self.previous: Snapshot | None = None
        """The snapshot its first frame ended at, until its second frame is built."""
        self.sequence = 0
        self.dropped = 0

    def offer(self, frame: bytes) -> None:
        if self._frame is not None:
            self.dropped += 1
        self._frame = frame
        self._wake.set()

    def add_event(self, event: bytes) -> None:
        if "events" not in self.sections:
            return
        if len(self._events) >= MAX_PENDING_EVENTS:
            self._events.popleft()
        self._events.append(event)

    def end(self) -> None:
        """No frames after the one pending (if any)."""
        self._closed = True
        self._wake.set()

    def close(self) -> None:
        """The subscriber left."""
        self._closed = True
        self._hub._remove(self)
        self._wake.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        while self._frame is None:
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        frame, self._frame = self._frame, None
        self.sequence += 1
        tail = _SEQUENCE_KEY + varint(self.sequence)  # written by hand: a message per frame costs more
        if self.dropped:
            tail += _DROPPED_KEY + varint(self.dropped)
        if not self._events:
            return frame + tail
        events = b"".join(length_delimited(_EVENTS_TAG, e) for e in self._events)
        self._events.clear()
        return frame + tail + events


_EVENTS_TAG = tag(telemetry_pb2.TelemetryFrame.EVENTS_FIELD_NUMBER, 2)
_SEQUENCE_KEY = tag(telemetry_pb2.TelemetryFrame.SEQUENCE_FIELD_NUMBER, 0)
_DROPPED_KEY = tag(telemetry_pb2.TelemetryFrame.DROPPED_FRAMES_FIELD_NUMBER, 0)


@dataclass(frozen=True)
class _Parts:
    then: Snapshot | None
    models: list[telemetry_pb2.ModelTelemetry]
    server: telemetry_pb2.ServerTelemetry
    alerts: list[telemetry_pb2.Alert]


class TelemetryHub:
    """Ticks, builds frames and hands them out.

    >>> hub = TelemetryHub(read_snapshot, bounds, max_subscribers=512)
    >>> await hub.start()
    >>> async for frame in hub.subscribe(interval_ms=1000): ...
    """

    def __init__(self, read: Callable[[], Snapshot], bounds: Mapping[str, Sequence[float]], *, max_subscribers: int,
                 tick_seconds: float = TICK_SECONDS, member: str = "") -> None:
        self._read = read
        self.member = member
        """This process's id in its fleet, on the events it publishes."""
        self.event_listeners: list[Callable[[telemetry_pb2.TelemetryEvent], None]] = []
        """Told of every event this process publishes (not of those it relays from other members)."""
        self._bounds = bounds
        self.max_subscribers = max_subscribers
        self._tick_seconds = tick_seconds
        self._subscribers: list[Subscription] = []
        self._snapshots: dict[int, Snapshot] = {}
        self._tick = 0
        self._event_sequence = 0
        self._task: asyncio.Task[None] | None = None
        self._start_monotonic = time.monotonic()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribe(self, interval_ms: int = 0, models: Iterable[str] = (), sections: Iterable[str] = (),
                  member: str = "") -> Subscription:
        """A new subscription; InvalidSubscription for an interval or section out of range, TooManySubscribers past the
        subscriber limit."""
        interval_ms = interval_ms or DEFAULT_INTERVAL_MS
        if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
            raise InvalidSubscription(f"interval_ms must be from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}, "
                                  f"got {interval_ms}")
        chosen = frozenset(sections) or SECTIONS
        unknown = chosen - SECTIONS
        if unknown:
            raise InvalidSubscription(f"unknown telemetry sections {sorted(unknown)}; choose from {sorted(SECTIONS)}")
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManySubscribers(f"the server has its limit of {self.max_subscribers} telemetry subscribers")
        ticks = -(-interval_ms // round(self._tick_seconds * 1000))
        baseline = self._read()
        if member and member not in baseline.members:
            known = ", ".join(sorted(baseline.members)) or "none"
            raise InvalidSubscription(f"no member {member!r} in the fleet (members: {known})")
        subscription = Subscription(self, ticks, frozenset(models), chosen, member)
        subscription.baseline = baseline
        self._subscribers.append(subscription)
        return subscription

    def _remove(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def publish(self, kind: EventKind, *, model: str = "", version: str = "", message: str = "") -> None:
        """An event of this process for every current subscriber, in the next frame each receives."""
        event = Event(kind=Event.Kind.Name(kind), timestamp_unix_nanos=time.time_ns(), model=model, version=version,
                      message=message, member=self.member)
        for listener in self.event_listeners:
            listener(event)
        self.relay(event)

    def relay(self, event: telemetry_pb2.TelemetryEvent) -> None:
        """An event (of this process or another member) for every current subscriber, numbered in this stream."""
        self._event_sequence += 1
        numbered = Event()
        numbered.CopyFrom(event)
        numbered.sequence = self._event_sequence
        data = numbered.SerializeToString()
        for subscription in self._subscribers:
            subscription.add_event(data)

    async def start(self) -> None:
        self._snapshots[0] = self._read()
        self._task = asyncio.create_task(self._run(), name="telemetry-hub")

    async def close(self) -> None:
        """Send every subscriber a last frame (with any pending events), then end every stream."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._subscribers:
            self._emit(self._tick + 1, final=True)
        for subscription in list(self._subscribers):
            subscription.end()
        self._subscribers.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            self._tick += 1
            await asyncio.sleep(max(started + self._tick * self._tick_seconds - loop.time(), 0))
            try:
                self._emit(self._tick)
            except Exception:  # a bad tick must not end every stream
                logger.exception("building telemetry frames failed")

    def _emit(self, tick: int, *, final: bool = False) -> None:
        # New subscribers get a first frame at once (covering the time since they came); then every k ticks.
        due = [s for s in self._subscribers if final or tick % s.interval_ticks == 0 or s.baseline is not None]
        intervals = {s.interval_ticks for s in self._subscribers}
        if not due and not any(tick % k == 0 for k in intervals):
            self._forget(tick, intervals)
            return
        now = self._read()
        self._snapshots[tick] = now
        frames: dict[tuple[int, frozenset[str], frozenset[str], str], bytes] = {}
        parts: dict[tuple[int, str], _Parts] = {}
        for subscription in due:
            first = subscription.baseline
            if first is not None:  # its own first frame, from the snapshot taken when it subscribed
                subscription.baseline = None
                subscription.offer(self._serialize(now, self._parts(now, first, subscription.member), subscription))
                subscription.previous = now
                continue
            previous, subscription.previous = subscription.previous, None
            if self._baseline(tick, subscription.interval_ticks) is None and previous is not None:
                # it arrived after the tick its interval starts from: this frame covers the time since its first
                subscription.offer(self._serialize(now, self._parts(now, previous, subscription.member),
                                                   subscription))
                continue
            frame = frames.get(subscription.key)
            if frame is None:
                k, member = subscription.interval_ticks, subscription.member
                if (k, member) not in parts:
                    parts[(k, member)] = self._parts(now, self._baseline(tick, k), member)
                frame = frames[subscription.key] = self._serialize(now, parts[(k, member)], subscription)
            subscription.offer(frame)
        self._forget(tick, intervals)

    def _baseline(self, tick: int, k: int) -> Snapshot | None:
        """The snapshot k ticks back, if one was taken."""
        return self._snapshots.get(tick - k)

    def _forget(self, tick: int, intervals: set[int]) -> None:
        """Keep only snapshots a current interval will start a frame from."""
        longest = max(intervals, default=1)
        for t in list(self._snapshots):
            if t < tick - longest or (t < tick and not any(t % k == 0 for k in intervals)):
                del self._snapshots[t]

    def _parts(self, now: Snapshot, then: Snapshot | None, member: str = "") -> _Parts:
        """What every frame over the interval from `then` to `now` shares, before filtering: of the whole fleet,
        or of one member (nothing of a member that has left)."""
        if member:
            whole = now
            now = now.members.get(member) or Snapshot(whole.time_ns, whole.monotonic, {}, server_state="LEFT")
            then = then.members.get(member) if then is not None else None
        return _Parts(then, model_frames(now, then, self._bounds, self._start_monotonic), server_frame(now, then),
                      alert_frames(now))

    def _serialize(self, now: Snapshot, parts: _Parts, subscription: Subscription) -> bytes:
        then, models, server, alerts = parts.then, parts.models, parts.server, parts.alerts
        covered = round((now.monotonic - then.monotonic) * 1000) if then is not None else 0
        frame = telemetry_pb2.TelemetryFrame(timestamp_unix_nanos=now.time_ns, interval_ms=covered,
                                             uptime_seconds=now.monotonic - self._start_monotonic,
                                             members=now.fleet, member=subscription.member)
        sections = subscription.sections
        if "models" in sections:
            frame.models.extend(m for m in models if not subscription.models or m.model in subscription.models)
            if "quality" not in sections:
                for model in frame.models:
                    model.ClearField("quality")
        if "server" in sections:
            frame.server.CopyFrom(server)
            frame.server.subscribers = len(self._subscribers)
        if "alerts" in sections:
            frame.alerts.extend(a for a in alerts if not subscription.models or a.model in subscription.models)
        if "rollouts" in sections:
            frame.rollouts.extend(r for r in now.rollouts if not subscription.models or r.model in subscription.models)
        return frame.SerializeToString()
