"""Delivers alert transitions to an Alertmanager through its v2 HTTP API, from one background task.

Like Prometheus, firing alerts are re-sent periodically with an `endsAt` a few resend intervals ahead, so
Alertmanager keeps them active while this process lives and resolves them by itself if it dies.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from vigil.telemetry.alerts.engine import ActiveAlert, AlertTransition, Labels, TransitionKind

logger = logging.getLogger(__name__)

ENDS_AT_RESENDS = 4
"""A firing alert's `endsAt` lies this many resend intervals after it is sent."""

MAX_BATCH = 100
"""The most alerts in one POST."""

_FIRST_BACKOFF_SECONDS = 0.5


def rfc3339(timestamp: float) -> str:
    """Unix seconds as an RFC 3339 UTC time with milliseconds, e.g. 2024-05-01T12:00:00.250Z."""
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class _Queued:
    """An alert waiting to be sent; a firing one (ends_at None) gets its `endsAt` when it is sent."""

    labels: Labels
    summary: str
    value: float
    starts_at: float
    ends_at: float | None


def _check_url(name: str, url: object, *, required: bool) -> str:
    if not isinstance(url, str):
        raise ValueError(f"{name} must be a string, got {url!r}")
    if not url and not required:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an absolute http(s) URL, got {url!r}")
    return url


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class AlertmanagerNotifier:
    """Queues alert notifications and POSTs them to `{url}/api/v2/alerts`.

    `notify` never blocks or raises. Delivery failures are logged once per outage and retried with backoff;
    the queue keeps the latest notification per label set and at most `max_queue` of them, dropping the
    oldest. Counters, all in alerts: `sent` delivered, `failed` affected by a failed POST (each attempt),
    `dropped` discarded undelivered. Payload times come from `clock` (Unix seconds); retry pacing uses
    the event loop's own time.
    """

    def __init__(self, url: str, *, timeout_seconds: float = 5.0, resend_seconds: float = 60.0, max_queue: int = 1000,
                 generator_url: str = "", clock: Callable[[], float] = time.time) -> None:
        self.url = _check_url("url", url, required=True).rstrip("/")
        self.timeout_seconds = _check_positive("timeout_seconds", timeout_seconds)
        self.resend_seconds = _check_positive("resend_seconds", resend_seconds)
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an integer >= 1, got {max_queue!r}")
        self.max_queue = max_queue
        self.generator_url = _check_url("generator_url", generator_url, required=False)
        if not callable(clock):
            raise ValueError(f"clock must be callable, got {clock!r}")
        self._clock = clock
        self._endpoint = f"{self.url}/api/v2/alerts"

        self.sent = 0
        self.failed = 0
        self.dropped = 0

        self._lock = threading.Lock()
        self._queue: dict[Labels, _Queued] = {}
        self._last_sent: dict[Labels, float] = {}
        self._wakeup = asyncio.Event()
        self._closing = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._down = False
        self._rejecting = False

    @property
    def queued(self) -> int:
        """How many alerts wait to be sent."""
        return len(self._queue)

    async def start(self) -> None:
        """Starts the background sender on the running event loop; a second call does nothing."""
        if self._closed:
            raise RuntimeError("AlertmanagerNotifier is closed")
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_seconds))
        self._task = self._loop.create_task(self._run(), name="alertmanager-notifier")
        self._wake()

    async def close(self) -> None:
        """Sends what is queued (giving up after `timeout_seconds`), then stops; later calls do nothing."""
        if self._closed:
            return
        if self._task is None and self._queue:
            await self.start()
        self._closed = True
        task, session = self._task, self._session
        try:
            if task is not None:
                self._closing.set()
                self._wakeup.set()
                done, _ = await asyncio.wait({task}, timeout=self.timeout_seconds)
                if not done:
                    task.cancel()
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
        finally:
            self._task = self._session = None
            if session is not None:
                await session.close()
            with self._lock:
                left, self._queue = len(self._queue), {}
            if left:
                self.dropped += left
                logger.warning("Alertmanager at %s: dropping %d undelivered alerts at shutdown", self.url, left)

    def notify(self, transitions: Sequence[AlertTransition], firing: Sequence[ActiveAlert]) -> None:
        """Queues the transitions, and the firing alerts whose resend is due; never blocks or raises.

        Pass every evaluation's transitions and the full list of firing alerts: an alert is re-sent once
        `resend_seconds` have passed since it was last queued. Does nothing once closed.
        """
        try:
            if self._closed:
                return
            now = self._clock()
            fresh: set[Labels] = set()
            for transition in transitions:
                alert = transition.alert
                if transition.kind is TransitionKind.RESOLVED:
                    ends_at = alert.resolved_at if alert.resolved_at is not None else transition.at
                    self._enqueue(alert, ends_at)
                    self._last_sent.pop(alert.labels, None)
                else:
                    self._enqueue(alert, None)
                    self._last_sent[alert.labels] = now
                    fresh.add(alert.labels)
            for alert in firing:
                fresh.add(alert.labels)
                last = self._last_sent.get(alert.labels)
                if last is None or now - last >= self.resend_seconds:
                    self._enqueue(alert, None)
                    self._last_sent[alert.labels] = now
            for labels in set(self._last_sent) - fresh:
                del self._last_sent[labels]
            self._wake()
        except Exception:
            logger.exception("Alertmanager notification could not be queued")

    def _enqueue(self, alert: ActiveAlert, ends_at: float | None) -> None:
        starts_at = alert.fired_at if alert.fired_at is not None else alert.active_since
        item = _Queued(alert.labels, alert.summary, alert.value, starts_at, ends_at)
        with self._lock:
            self._queue.pop(item.labels, None)
            self._queue[item.labels] = item
            self._trim()

    def _trim(self) -> None:
        """Drops the oldest entries beyond `max_queue`; call with the lock held."""
        while len(self._queue) > self.max_queue:
            del self._queue[next(iter(self._queue))]
            self.dropped += 1

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    def _payload(self, item: _Queued, now: float) -> dict[str, Any]:
        """The v2 API alert; a firing alert's `endsAt` is provisional, a few resend intervals ahead."""
        ends_at = now + ENDS_AT_RESENDS * self.resend_seconds if item.ends_at is None else item.ends_at
        payload: dict[str, Any] = {
            "labels": dict(item.labels),
            "annotations": {"summary": item.summary, "value": repr(item.value)},
            "startsAt": rfc3339(item.starts_at),
            "endsAt": rfc3339(max(ends_at, item.starts_at)),
        }
        if self.generator_url:
            payload["generatorURL"] = self.generator_url
        return payload

    async def _run(self) -> None:
        backoff = min(_FIRST_BACKOFF_SECONDS, self.resend_seconds)
        while True:
            try:
                if not self._queue:
                    if self._closing.is_set():
                        return
                    await self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                if await self._flush():
                    backoff = min(_FIRST_BACKOFF_SECONDS, self.resend_seconds)
                    continue
            except Exception:
                logger.exception("Alertmanager notifier failed unexpectedly; retrying")
            if self._closing.is_set():
                return
            try:
                await asyncio.wait_for(self._closing.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self.resend_seconds)

    async def _flush(self) -> bool:
        """Sends the queue in batches; False when a batch could not be delivered (it is queued again)."""
        while True:
            with self._lock:
                batch = [self._queue.pop(labels) for labels in list(self._queue)[:MAX_BATCH]]
            if not batch:
                return True
            error, retry = await self._post(batch)
            if error is None:
                self.sent += len(batch)
                if self._down or self._rejecting:
                    logger.info("Alertmanager at %s is reachable again and accepts alerts", self.url)
                self._down = self._rejecting = False
                continue
            self.failed += len(batch)
            if not retry:
                self.dropped += len(batch)
                if not self._rejecting:
                    self._rejecting = True
                    logger.warning("Alertmanager at %s rejected %d alerts: %s; dropping them", self.url,
                                   len(batch), error)
                continue
            with self._lock:
                queue = {item.labels: item for item in batch if item.labels not in self._queue}
                queue.update(self._queue)
                self._queue = queue
                self._trim()
            if not self._down:
                self._down = True
                logger.warning("Alertmanager at %s unreachable: %s, will keep retrying", self.url, error)
            return False

    async def _post(self, batch: list[_Queued]) -> tuple[str | None, bool]:
        """POSTs one batch; returns (None, _) on success, else (error, whether a retry can help)."""
        session = self._session
        if session is None:
            return "notifier is not started", True
        try:
            body = [self._payload(item, self._clock()) for item in batch]
            async with session.post(self._endpoint, json=body) as response:
                if 200 <= response.status < 300:
                    return None, True
                text = (await response.text(errors="replace")).strip()[:200]
                error = f"HTTP {response.status} {response.reason or ''}".rstrip() + (f": {text}" if text else "")
                retry = response.status >= 500 or response.status in (408, 429)
                return error, retry
        except TimeoutError:
            return f"no response within {self.timeout_seconds:g}s", True
        except Exception as exc:  # aiohttp.ClientError, OSError, and anything unexpected: keep retrying
            return f"{type(exc).__name__}: {exc}", True
