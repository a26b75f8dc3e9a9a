"""`vigil serve --workers 2` as a real process tree: calls on one port reach both workers, one scrape counts them
all, a worker killed with SIGKILL is started again while the other serves on, and SIGTERM drains them all."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc, telemetry_pb2
from vigil.server.workers import WORKER_KEY

VIGIL = shutil.which("vigil", path=str(Path(sys.executable).parent)) or "vigil"
PROMTOOL = shutil.which("promtool")
SERVING = health_pb2.HealthCheckResponse.SERVING
REQUEST = pb.PredictRequest(model_name="breast_cancer",
                            inputs=[from_array("features", np.zeros((1, 30), np.float32))])


class Host:
    """`vigil serve --workers N` in a process of its own, its output read as it comes (a full pipe would stall
    it)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())
        self.grpc_port = 0
        self.http_port = 0

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    async def find(self, pattern: str, seconds: float = 60.0, after: int = 0) -> re.Match[str]:
        """The first match of `pattern` in the output from line `after` on, waiting for it."""
        deadline = time.monotonic() + seconds
        while True:
            for line in self.lines[after:]:
                if match := re.search(pattern, line):
                    return match
            assert self.process.returncode is None, "".join(self.lines[-20:])
            assert time.monotonic() < deadline, f"no {pattern!r} in the output:\n" + "".join(self.lines[-20:])
            await asyncio.sleep(0.05)

    def worker_pid(self, index: int) -> int:
        """The process id of worker `index`'s latest process."""
        pids = [int(m.group(1)) for line in self.lines
                if (m := re.search(rf"worker {index} started \(pid (\d+)\)", line))]
        return pids[-1]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    async def http(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{self.http_port}{path}") as response:
            return response.status, await response.text()

    async def stop(self) -> int:
        """SIGTERM, and the exit status (the process is killed if it has not exited within 30 s)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        await self.output_ended()
        return code

    async def output_ended(self) -> None:
        """Wait for the end of the output: every process of the host has closed it."""
        await asyncio.wait_for(self._reader, 30)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, workers: int = 2) -> AsyncIterator[Host]:
    """The host, up: both ports announced and every worker SERVING."""
    env = {**os.environ, "VIGIL_STORE__URL": f"sqlite:///{tmp_path / 'store.db'}", "VIGIL_LOG_LEVEL": "INFO",
           "VIGIL_SHUTDOWN_GRACE_SECONDS": "5", "VIGIL_SHUTDOWN_REFUSE_SECONDS": "0.2",
           "VIGIL_TELEMETRY__LOG_FORMAT": "text", "TMPDIR": str(tmp_path)}
    process = await asyncio.create_subprocess_exec(
        VIGIL, "serve", "--workers", str(workers), "--host", "127.0.0.1", "--port", "0", "--http-port", "0",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    host = Host(process)
    try:
        host.grpc_port = int((await host.find(r"gRPC listening on [\d.]+:(\d+)")).group(1))
        host.http_port = int((await host.find(r"HTTP listening on [\d.]+:(\d+)")).group(1))
        await ready(host)
        yield host
    finally:
        if process.returncode is None:
            await host.stop()
        await host.output_ended()


async def ready(host: Host, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while (await host.http("/readyz"))[0] != 200:
        assert time.monotonic() < deadline, "the host did not become ready:\n" + "".join(host.lines[-20:])
        await asyncio.sleep(0.1)


def channels(host: Host, count: int) -> list[grpc.aio.Channel]:
    """Channels with a connection each: by default gRPC shares one connection among channels to one address."""
    return [grpc.aio.insecure_channel(host.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(count)]


async def predict(channel: grpc.aio.Channel) -> str:
    """One Predict call; the worker that answered it."""
    call = inference_pb2_grpc.InferenceStub(channel).Predict(REQUEST, timeout=10)
    await call
    return dict(await call.trailing_metadata())[WORKER_KEY]


async def fleet_frame(host: Host, check: Callable[[telemetry_pb2.TelemetryFrame], bool],
                      seconds: float = 15.0) -> telemetry_pb2.TelemetryFrame:
    """The first Telemetry frame that passes `check` (another member's counts arrive at its next tick)."""
    async with grpc.aio.insecure_channel(host.target) as channel:
        call = inference_pb2_grpc.InferenceStub(channel).Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=200))
        try:
            async with asyncio.timeout(seconds):
                async for frame in call:
                    if check(frame):
                        return frame
        finally:
            call.cancel()
    raise AssertionError("the stream ended")


def total(page: str, name: str, **labels: str) -> float:
    """The sum of every sample of `name` with these labels on a text-format page."""
    found = 0.0
    for line in page.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and \
                all(f'{k}="{v}"' in line for k, v in labels.items()):
            found += float(line.rsplit(" ", 1)[1])
    return found


async def test_two_workers_share_the_port_and_one_scrape_counts_every_call(tmp_path: Path) -> None:
    sent = 37
    async with serving(tmp_path) as host:
        opened = channels(host, 16)
        try:
            answered_by = [await predict(opened[i % len(opened)]) for i in range(sent)]
            for channel in opened:
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
                assert health.status == SERVING
        finally:
            for channel in opened:
                await channel.close()
        assert set(answered_by) == {"0", "1"}  # 16 connections, spread by the kernel over both workers
        # a call is counted as its handler ends, a moment after its caller has the answer
        deadline = time.monotonic() + 10
        while total(page := (await host.http("/metrics"))[1], "vigil_requests_total", method="Predict") < sent:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert total(page, "vigil_requests_total", method="Predict") == sent
        assert total(page, "vigil_request_duration_seconds_count", method="Predict") == sent
        assert total(page, "vigil_worker_ready", worker="0") == total(page, "vigil_worker_ready", worker="1") == 1
        assert total(page, "vigil_worker_restarts_total") == 0
        assert re.search(r'^process_memory_usage_bytes\{worker="1"\} ', page, re.MULTILINE)  # a gauge per worker
        if PROMTOOL is not None:
            checked = subprocess.run([PROMTOOL, "check", "metrics"], input=page.encode(), capture_output=True,
                                     timeout=60)
            assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
        status, _ = await host.http("/report.json")  # any other path: answered by a worker
        assert status == 200
        # the Telemetry stream of either worker: the host's two workers are one fleet, counted exactly
        frame = await fleet_frame(host, lambda f: len(f.members) == 2
                                  and sum(m.requests_total for m in f.models if m.model == "breast_cancer") >= sent)
        assert sum(m.requests_total for m in frame.models if m.model == "breast_cancer") == sent
        assert sorted(m.worker for m in frame.members) == [0, 1] and sum(m.leader for m in frame.members) == 1
        code = await host.stop()
    assert code == 0
    assert len(re.findall(r"worker \d \(pid \d+\) exited with status 0", "".join(host.lines))) == 2
    assert not list(tmp_path.glob("vigil-workers-*"))  # the workers' sockets, removed


async def test_workers_end_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    async with serving(tmp_path) as host:
        workers = [host.worker_pid(0), host.worker_pid(1)]
        host.process.kill()
        assert await asyncio.wait_for(host.process.wait(), 30) == -signal.SIGKILL
        deadline = time.monotonic() + 30  # each drains first, within its grace period
        while any(Path(f"/proc/{pid}").exists() and _is_running(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            await asyncio.sleep(0.1)
    assert not list(tmp_path.glob("vigil-workers-*"))  # the last worker out removed the sockets' folder


def _is_running(pid: int) -> bool:
    """Whether `pid` is a live process (not a zombie waiting for a parent that is gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_worker_killed_with_sigkill_is_started_again_while_the_other_serves(tmp_path: Path) -> None:
    async with serving(tmp_path) as host:
        opened = channels(host, 16)
        try:
            owners = [await predict(channel) for channel in opened]
            survivors = [c for c, owner in zip(opened, owners, strict=True) if owner == "0"]
            assert survivors and len(survivors) < len(opened)
            events = inference_pb2_grpc.InferenceStub(survivors[0]).Telemetry(
                telemetry_pb2.TelemetryRequest(interval_ms=100, sections=["events"]))
            await events.read()  # subscribed before the kill
            failures: list[grpc.aio.AioRpcError] = []
            answered = 0
            restarted = asyncio.Event()

            async def keep_calling(channel: grpc.aio.Channel) -> None:
                nonlocal answered
                while not restarted.is_set():
                    try:
                        assert await predict(channel) == "0"
                        answered += 1
                    except grpc.aio.AioRpcError as exc:
                        failures.append(exc)

            callers = [asyncio.create_task(keep_calling(c)) for c in survivors]
            victim = host.worker_pid(1)
            mark = len(host.lines)
            os.kill(victim, signal.SIGKILL)
            await host.find(r"worker 1 \(pid \d+\) was killed by SIGKILL", after=mark)
            # while it starts again, the host is not ready: on the HTTP port, and in the health of the worker that
            # is up, whichever worker a probe reaches
            health = health_pb2_grpc.HealthStub(survivors[0])
            seen: set[tuple[int, int]] = set()
            deadline = time.monotonic() + 60
            while True:
                status = (await host.http("/readyz"))[0]
                reported = (await health.Check(health_pb2.HealthCheckRequest())).status
                seen.add((status, reported))
                if status == 200 and reported == SERVING:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await host.find(r"worker 1 started \(pid \d+\)", after=mark)
            restarted.set()
            await asyncio.gather(*callers)
            event = await _next_event(events)
            events.cancel()
        finally:
            for channel in opened:
                await channel.close()
        assert (503, health_pb2.HealthCheckResponse.NOT_SERVING) in seen
        assert host.worker_pid(1) != victim
        assert not failures, [f.code() for f in failures]
        assert answered > 0
        assert event.kind == telemetry_pb2.TelemetryEvent.WORKER_RESTARTED and "worker 1" in event.message
        page = (await host.http("/metrics"))[1]
        assert total(page, "vigil_worker_restarts_total", worker="1") == 1
        assert total(page, "vigil_worker_restarts_total", worker="0") == 0
        # new connections reach the new worker
        fresh = channels(host, 16)
        try:
            assert {await predict(channel) for channel in fresh} == {"0", "1"}
        finally:
            for channel in fresh:
                await channel.close()


async def _next_event(stream: grpc.aio.UnaryStreamCall) -> telemetry_pb2.TelemetryEvent:  # type: ignore[type-arg]
    for _ in range(600):
        frame = await asyncio.wait_for(stream.read(), 10)
        assert frame is not grpc.aio.EOF
        if frame.events:
            return frame.events[0]
    raise AssertionError("no event in 600 frames")


async def test_one_worker_is_the_single_process_server(tmp_path: Path) -> None:
    async with serving(tmp_path, workers=1) as host:
        [channel] = channels(host, 1)
        async with channel:
            call = inference_pb2_grpc.InferenceStub(channel).Predict(REQUEST, timeout=10)
            await call
            assert WORKER_KEY not in dict(await call.trailing_metadata())
        assert not any("worker 0 started" in line for line in host.lines)


def test_a_port_another_server_holds_is_refused_not_shared() -> None:
    """A second host (of the same user) on the same port would otherwise bind it too, with SO_REUSEPORT, and take
    half the connections without a word."""
    from vigil.server.workers.processes import reserve_port

    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(OSError):
            reserve_port("127.0.0.1", other.getsockname()[1]).close()
    free = reserve_port("127.0.0.1", 0)
    try:
        assert free.getsockname()[1] > 0
        joined = socket.socket()  # the workers bind the reserved port with SO_REUSEPORT too
        joined.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        joined.bind(("127.0.0.1", free.getsockname()[1]))
        joined.close()
    finally:
        free.close()
