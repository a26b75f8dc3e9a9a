"""The Alertmanager notifier against a recording HTTP endpoint, and end to end through a real Alertmanager."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from vigil.telemetry.alerts.alertmanager import AlertmanagerNotifier, rfc3339
from vigil.telemetry.alerts.engine import AlertEngine, AlertTransition, Series, TransitionKind
from vigil.telemetry.alerts.rules import AlertRule

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Receiver:
    """An HTTP server on 127.0.0.1 that records every JSON body POSTed to it and answers with `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.status = 200
        self.hold = False
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, await request.json()))
        if self.hold:
            await self._release.wait()
        return web.Response(status=self.status, text="" if self.status < 300 else "try later")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every POST, in arrival order."""
        return [alert for _, body in self.requests for alert in body]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def notifiers() -> AsyncIterator[Callable[..., AlertmanagerNotifier]]:
    """Makes notifiers and closes them all at the end of the test."""
    made: list[AlertmanagerNotifier] = []

    def make(url: str, **kwargs: Any) -> AlertmanagerNotifier:
        made.append(AlertmanagerNotifier(url, **kwargs))
        return made[-1]

    yield make
    for notifier in made:
        await notifier.close()


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Driver:
    """An engine with one rule over a value per version of model "m"."""

    def __init__(self, for_seconds: float = 0.0) -> None:
        self.rule = AlertRule(name="HighErrorRatio", signal="error_ratio", op=">", threshold=0.05,
                              for_seconds=for_seconds, severity="critical", labels={"team": "ml"},
                              summary="{model} v{version} error ratio {value} > {threshold}")
        self.engine = AlertEngine([self.rule])
        self.values: dict[str, float] = {}

    def read(self, rule: AlertRule) -> Sequence[Series]:
        return [({"model": "m", "version": v}, x) for v, x in self.values.items()]

    def step(self, now: float, notifier: AlertmanagerNotifier | None = None) -> list[AlertTransition]:
        transitions = self.engine.evaluate(self.read, now)
        if notifier is not None:
            notifier.notify(transitions, self.engine.firing())
        return transitions


async def test_payload_shape_for_firing_and_resolved(receiver: Receiver, notifiers: Callable[..., AlertmanagerNotifier]
                                                     ) -> None:
    clock = Clock()
    notifier = notifiers(receiver.url + "/", resend_seconds=60, clock=clock, generator_url="http://vigil:8080/alerts")
    await notifier.start()
    driver = Driver()
    driver.values["1"] = 0.2
    [fired] = driver.step(clock.now, notifier)
    await wait_until(lambda: len(receiver.requests) == 1, "the firing alert")
    path, body = receiver.requests[0]
    assert path == "/api/v2/alerts" and isinstance(body, list) and len(body) == 1
    assert body[0] == {
        "labels": {"alertname": "HighErrorRatio", "severity": "critical", "team": "ml", "model": "m", "version": "1"},
        "annotations": {"summary": "m v1 error ratio 20.0% > 5.0%", "value": "0.2"},
        "startsAt": "2023-11-14T22:13:20.000Z",
        "endsAt": rfc3339(START + 4 * 60),
        "generatorURL": "http://vigil:8080/alerts",
    }

    clock.now += 30.5
    driver.values["1"] = 0.01
    [resolved] = driver.step(clock.now, notifier)
    assert resolved.kind is TransitionKind.RESOLVED
    await wait_until(lambda: len(receiver.requests) == 2, "the resolved alert")
    alert = receiver.requests[1][1][0]
    assert alert["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert alert["endsAt"] == "2023-11-14T22:13:50.500Z"
    assert alert["annotations"] == {"summary": "m v1 error ratio 1.0% > 5.0%", "value": "0.01"}
    assert (notifier.sent, notifier.failed, notifier.dropped, notifier.queued) == (2, 0, 0, 0)


async def test_firing_alerts_are_resent_every_resend_seconds(receiver: Receiver,
                                                            notifiers: Callable[..., AlertmanagerNotifier]) -> None:
    clock = Clock()
    notifier = notifiers(receiver.url, resend_seconds=60, clock=clock)
    await notifier.start()
    driver = Driver()
    driver.values["1"] = 1.0
    driver.step(clock.now, notifier)
    await wait_until(lambda: notifier.sent == 1, "the first send")

    clock.now += 59.9
    driver.step(clock.now, notifier)
    assert notifier.queued == 0  # not due yet
    clock.now += 0.1
    driver.step(clock.now, notifier)
    assert notifier.queued == 1
    await wait_until(lambda: notifier.sent == 2, "the resend")
    resent = receiver.alerts[1]
    assert resent["labels"]["version"] == "1" and resent["startsAt"] == rfc3339(START)
    assert resent["endsAt"] == rfc3339(START + 60 + 240)  # pushed forward with every resend

    driver.values["2"] = 1.0  # a second alert fires in between: it has its own schedule
    clock.now += 30
    driver.step(clock.now, notifier)
    await wait_until(lambda: notifier.sent == 3, "the second alert")
    assert receiver.alerts[2]["labels"]["version"] == "2"
    clock.now += 30
    driver.step(clock.now, notifier)
    await wait_until(lambda: notifier.sent == 4, "the first alert's second resend")
    assert [a["labels"]["version"] for a in receiver.alerts] == ["1", "1", "2", "1"]

    late = notifiers(receiver.url, resend_seconds=60, clock=clock)  # one that never saw the transitions
    await late.start()
    late.notify([], driver.engine.firing())
    await wait_until(lambda: late.sent == 2, "the firing alerts from a notifier that missed their transitions")


async def test_an_outage_is_logged_once_and_its_end_once(receiver: Receiver, caplog: pytest.LogCaptureFixture,
                                                         notifiers: Callable[..., AlertmanagerNotifier]) -> None:
    caplog.set_level(logging.INFO, logger="vigil.telemetry.alerts.alertmanager")
    clock = Clock()
    notifier = notifiers(receiver.url, resend_seconds=0.1, clock=clock)
    await notifier.start()
    driver = Driver()
    receiver.status = 503
    driver.values["1"] = 1.0
    driver.step(clock.now, notifier)
    await wait_until(lambda: len(receiver.requests) >= 4, "several failed attempts")
    driver.values["2"] = 1.0
    driver.step(clock.now, notifier)
    await wait_until(lambda: notifier.failed >= 6, "more failed attempts")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"Alertmanager at {receiver.url} unreachable: HTTP 503 Service Unavailable: try later, "
                        "will keep retrying"]
    assert notifier.sent == 0 and notifier.queued == 2

    receiver.status = 200
    await wait_until(lambda: notifier.sent == 2, "delivery after recovery")
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        f"Alertmanager at {receiver.url} is reachable again and accepts alerts"]
    last = receiver.requests[-1][1]
    assert sorted(a["labels"]["version"] for a in last) == ["1", "2"]  # the failed batch went out again

    receiver.status = 500  # a second outage is reported again
    driver.values["1"] = 0.0
    driver.step(clock.now, notifier)
    await wait_until(lambda: sum(r.levelno == logging.WARNING for r in caplog.records) == 2, "the second outage")


async def test_connection_refused_and_timeouts(receiver: Receiver, caplog: pytest.LogCaptureFixture,
                                               notifiers: Callable[..., AlertmanagerNotifier]) -> None:
    refused = notifiers(f"http://127.0.0.1:{free_port()}", timeout_seconds=0.5, resend_seconds=0.05)
    await refused.start()
    driver = Driver()
    driver.values["1"] = 1.0
    driver.step(time.time(), refused)
    await wait_until(lambda: refused.failed >= 3, "connection attempts")
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "unreachable" in warning and "will keep retrying" in warning and "Connect" in warning

    started = time.monotonic()
    await refused.close()
    assert time.monotonic() - started < 2.0
    assert refused.dropped == 1 and refused.sent == 0
    assert "dropping 1 undelivered alerts at shutdown" in caplog.text

    caplog.clear()
    receiver.hold = True
    slow = notifiers(receiver.url, timeout_seconds=0.2, resend_seconds=0.05)
    await slow.start()
    slow.notify([], driver.engine.firing())
    await wait_until(lambda: slow.failed >= 2, "timed-out attempts")
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == f"Alertmanager at {receiver.url} unreachable: no response within 0.2s, will keep retrying"


async def test_notify_never_raises_or_blocks(receiver: Receiver, caplog: pytest.LogCaptureFixture,
                                             notifiers: Callable[..., AlertmanagerNotifier]) -> None:
    receiver.hold = True  # the endpoint never answers
    notifier = notifiers(receiver.url, timeout_seconds=0.5, max_queue=50)
    await notifier.start()
    driver = Driver()
    for version in range(200):
        driver.values[str(version)] = 1.0
    transitions = driver.step(time.time())
    await asyncio.sleep(0)
    started = time.perf_counter()
    for _ in range(20):
        notifier.notify(transitions, driver.engine.firing())
    assert time.perf_counter() - started < 0.5
    assert notifier.queued <= 50 and notifier.dropped >= 150

    notifier.notify([object()], [])  # type: ignore[list-item]
    notifier.notify(None, None)  # type: ignore[arg-type]

    def broken_clock() -> float:
        raise RuntimeError("clock broke")

    broken = notifiers(receiver.url, clock=broken_clock)
    broken.notify(transitions, driver.engine.firing())
    assert caplog.text.count("could not be queued") == 3 and "clock broke" in caplog.text


async def test_the_queue_is_bounded_and_keeps_the_latest_per_alert(receiver: Receiver,
                                                                  notifiers: Callable[..., AlertmanagerNotifier]
                                                                  ) -> None:
    clock = Clock()
    notifier = notifiers(receiver.url, max_queue=3, clock=clock)
    driver = Driver()
    for version in "12345":
        driver.values[version] = 1.0
        clock.now += 1
        driver.step(clock.now, notifier)  # queued before start()
    assert (notifier.queued, notifier.dropped) == (3, 2)  # 3, 4 and 5: the oldest went first
    driver.values["3"] = 0.0
    driver.step(clock.now + 1, notifier)  # replaces version 3's queued notification, which becomes the newest
    assert (notifier.queued, notifier.dropped) == (3, 2)
    driver.values["6"] = 1.0
    driver.step(clock.now + 2, notifier)  # so version 4 is dropped now, not version 3
    assert (notifier.queued, notifier.dropped) == (3, 3)
    await notifier.start()
    await wait_until(lambda: notifier.sent == 3, "the queued alerts")
    assert [a["labels"]["version"] for a in receiver.alerts] == ["5", "3", "6"]
    assert receiver.alerts[1]["endsAt"] == rfc3339(clock.now + 1)  # the resolved one ends when it resolved
    assert receiver.alerts[0]["endsAt"] == receiver.alerts[2]["endsAt"] == rfc3339(clock.now + 240)


async def test_close_flushes_and_is_idempotent(receiver: Receiver, notifiers: Callable[..., AlertmanagerNotifier]
                                               ) -> None:
    driver = Driver()
    driver.values["1"] = 1.0
    transitions = driver.step(time.time())

    started = notifiers(receiver.url)
    await started.start()
    started.notify(transitions, driver.engine.firing())
    await started.close()  # no chance to send before close: close sends it
    assert len(receiver.requests) == 1 and started.sent == 1
    await started.close()
    started.notify(transitions, driver.engine.firing())
    assert started.queued == 0
    with pytest.raises(RuntimeError, match="closed"):
        await started.start()

    idle = notifiers(receiver.url, timeout_seconds=5)
    await idle.start()
    began = time.monotonic()
    await idle.close()  # nothing queued: returns at once rather than after the timeout
    assert time.monotonic() - began < 1.0

    never_started = notifiers(receiver.url)
    never_started.notify(transitions, driver.engine.firing())
    await never_started.close()
    assert len(receiver.requests) == 2 and never_started.sent == 1


async def test_a_rejected_batch_is_dropped_not_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture,
                                                      notifiers: Callable[..., AlertmanagerNotifier]) -> None:
    receiver.status = 400
    notifier = notifiers(receiver.url, resend_seconds=0.05)
    await notifier.start()
    driver = Driver()
    driver.values["1"] = 1.0
    driver.step(time.time(), notifier)
    await wait_until(lambda: notifier.dropped == 1, "the rejection")
    await asyncio.sleep(0.3)  # several backoff periods: nothing is retried
    assert len(receiver.requests) == 1 and (notifier.failed, notifier.queued, notifier.sent) == (1, 0, 0)
    assert "rejected 1 alerts: HTTP 400 Bad Request" in caplog.text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"url": "127.0.0.1:9093"}, "url"),
    ({"url": "ftp://host"}, "url"),
    ({"url": ""}, "url"),
    ({"timeout_seconds": 0}, "timeout_seconds"),
    ({"resend_seconds": float("nan")}, "resend_seconds"),
    ({"max_queue": 0}, "max_queue"),
    ({"max_queue": 1.5}, "max_queue"),
    ({"generator_url": "/relative"}, "generator_url"),
    ({"clock": 5}, "clock"),
])
def test_argument_validation(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"url": "http://127.0.0.1:9093"}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        AlertmanagerNotifier(**arguments)


ALERTMANAGER_CONFIG = """\
route:
  receiver: hook
  group_by: ['...']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{port}/hook
        send_resolved: true
"""


@contextlib.contextmanager
def alertmanager_process(tmp_path: Path, hook_port: int) -> Any:
    """A real Alertmanager on 127.0.0.1, clustering off, routing everything to the webhook; always stopped."""
    assert ALERTMANAGER is not None
    config = tmp_path / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG.format(port=hook_port))
    port = free_port()
    log_path = tmp_path / "alertmanager.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            yield process, f"http://127.0.0.1:{port}", log_path
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def alertmanager_log(log_path: Path) -> str:
    return f"\n--- alertmanager log ---\n{log_path.read_text(errors='replace')[-4000:]}"


async def wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Until the Alertmanager of `alertmanager_process` answers /-/ready (30 s at most; its log on failure)."""
    def diagnose() -> str:
        return alertmanager_log(log_path)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        async def ready() -> bool:
            try:
                async with session.get(f"{url}/-/ready") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        deadline = time.monotonic() + 30
        while not await ready():
            assert process.poll() is None, "alertmanager exited" + diagnose()
            assert time.monotonic() < deadline, "alertmanager not ready within 30s" + diagnose()
            await asyncio.sleep(0.1)


@pytest.mark.skipif(ALERTMANAGER is None, reason="prometheus-alertmanager is not installed")
async def test_a_real_alertmanager_notifies_firing_then_resolved(tmp_path: Path, receiver: Receiver) -> None:
    with alertmanager_process(tmp_path, receiver.port) as (process, url, log_path):
        def diagnose() -> str:
            return alertmanager_log(log_path)

        await wait_ready(process, url, log_path)

        notifier = AlertmanagerNotifier(url, timeout_seconds=2, resend_seconds=60,
                                        generator_url="http://vigil.test/alerts")
        await notifier.start()
        try:
            driver = Driver()
            driver.values["1"] = 0.3
            [fired] = driver.step(time.time(), notifier)

            def notifications(status: str) -> list[dict[str, Any]]:
                return [body for path, body in receiver.requests if path == "/hook" and body["status"] == status]

            deadline = time.monotonic() + 30
            while not notifications("firing"):
                assert time.monotonic() < deadline, "no firing notification within 30s" + diagnose()
                await asyncio.sleep(0.05)
            [firing] = notifications("firing")
            [alert] = firing["alerts"]
            assert alert["status"] == "firing" and alert["labels"] == fired.alert.label_dict
            assert alert["annotations"]["summary"] == "m v1 error ratio 30.0% > 5.0%"
            assert alert["generatorURL"] == "http://vigil.test/alerts"
            assert notifier.sent == 1 and notifier.failed == 0

            driver.values["1"] = 0.01
            [resolved] = driver.step(time.time(), notifier)
            assert resolved.kind is TransitionKind.RESOLVED
            deadline = time.monotonic() + 30
            while not notifications("resolved"):
                assert time.monotonic() < deadline, "no resolved notification within 30s" + diagnose()
                await asyncio.sleep(0.05)
            [alert] = notifications("resolved")[0]["alerts"]
            assert alert["status"] == "resolved" and alert["labels"] == fired.alert.label_dict
            assert alert["annotations"]["value"] == "0.01"
            assert process.poll() is None, "alertmanager exited" + diagnose()
        finally:
            await notifier.close()
