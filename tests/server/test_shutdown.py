"""Graceful shutdown: on SIGTERM health turns NOT_SERVING and new calls get UNAVAILABLE at once, queued and in-flight
calls finish, the process exits 0; a second signal exits at once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import onnx_models
from tests.conftest import running_app
from vigil.clients import AsyncClient, Unavailable, VigilError
from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.inference import grpc_service_pb2_grpc
from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.settings import DEFAULT_MODELS_DIR

VIGIL = str(Path(sys.executable).parent / "vigil")
WIDTH = 256


@pytest.fixture(scope="module")
def slow_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slow_models")
    onnx_models.slow_model(root / "slow" / "1" / "model.onnx", width=WIDTH)
    (root / "slow" / "config.toml").write_text(
        'max_batch_size = 1000\nexecution_providers = ["cpu"]\nintra_op_threads = 1\n[warmup]\nruns = 0\n')
    return root


def slow_request(rows: int, value: float) -> pb.PredictRequest:
    return pb.PredictRequest(model_name="slow", inputs=[from_array("x", np.full((rows, WIDTH), value, np.float32))])


class Served:
    def __init__(self, process: asyncio.subprocess.Process, target: str) -> None:
        self.process = process
        self.target = target


async def serve(repo: Path, grace: float, **env_extra: str) -> Served:
    env = {**os.environ, "VIGIL_SHUTDOWN_GRACE_SECONDS": str(grace), "VIGIL_LOG_LEVEL": "WARNING", **env_extra}
    process = await asyncio.create_subprocess_exec(
        VIGIL, "serve", "--models", str(repo), "--host", "127.0.0.1", "--port", "0", "--http-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
    assert process.stdout is not None
    while line := (await asyncio.wait_for(process.stdout.readline(), 60)).decode():
        match = re.search(r"gRPC listening on [\d.]+:(\d+)", line)
        if match:
            served = Served(process, f"127.0.0.1:{match.group(1)}")
            async with grpc.aio.insecure_channel(served.target) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for _ in range(600):
                    if (await health.Check(health_pb2.HealthCheckRequest())).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return served
                    await asyncio.sleep(0.1)
    process.kill()
    raise AssertionError("vigil serve did not come up")


async def test_sigterm_under_load_finishes_admitted_calls_and_exits_zero(slow_repo: Path) -> None:
    served = await serve(slow_repo, grace=20)
    outcomes: list[tuple[float, float, grpc.StatusCode, str]] = []  # (sent, answered, code, details)
    signalled = asyncio.Event()
    signal_at = 0.0

    async def client_loop(channel: grpc.aio.Channel, worker: int) -> None:
        stub = inference_pb2_grpc.InferenceStub(channel)
        value = float(worker)
        while True:
            sent = time.monotonic()
            try:
                response = await stub.Predict(slow_request(20, value), timeout=30)
            except grpc.aio.AioRpcError as exc:
                outcomes.append((sent, time.monotonic(), exc.code(), exc.details() or ""))
                if signalled.is_set():
                    return
                continue
            y = np.frombuffer(response.outputs[0].raw_data, np.float32)
            assert np.all(y == value)  # each caller gets its own answer
            outcomes.append((sent, time.monotonic(), grpc.StatusCode.OK, ""))

    async with grpc.aio.insecure_channel(served.target) as channel:
        loops = [asyncio.create_task(client_loop(channel, i)) for i in range(16)]
        await asyncio.sleep(1.5)
        signal_at = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        signalled.set()
        await asyncio.wait_for(asyncio.gather(*loops), 40)
    code = await asyncio.wait_for(served.process.wait(), 40)
    assert code == 0
    codes = {c for _, _, c, _ in outcomes}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, [
        (round(a - signal_at, 3), round(b - signal_at, 3), c, d) for a, b, c, d in outcomes
        if c not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE)]
    before = [o for o in outcomes if o[0] < signal_at - 0.2]
    assert before and all(c is grpc.StatusCode.OK for _, _, c, _ in before)  # admitted before the signal: served
    assert any(answered > signal_at and c is grpc.StatusCode.OK for _, answered, c, _ in outcomes)  # drained
    refused = [d for sent, _, c, d in outcomes if c is grpc.StatusCode.UNAVAILABLE]
    assert len(refused) >= 16  # each loop ends on its first refusal after the signal


async def test_second_signal_exits_at_once(slow_repo: Path) -> None:
    served = await serve(slow_repo, grace=60)
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        requests: asyncio.Queue[oip.ModelInferRequest | None] = asyncio.Queue()

        async def send() -> AsyncIterator[oip.ModelInferRequest]:
            while (item := await requests.get()) is not None:
                yield item

        stream = stub.ModelStreamInfer(send())  # an open stream: draining waits for it up to the grace period
        await requests.put(oip.ModelInferRequest(model_name="slow", inputs=[oip.ModelInferRequest.InferInputTensor(
            name="x", datatype="FP32", shape=[1, WIDTH],
            contents=oip.InferTensorContents(fp32_contents=[1.0] * WIDTH))]))
        assert (await stream.read()).error_message == ""
        served.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert served.process.returncode is None  # still draining: the stream is open
        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(served.process.wait(), 10)
        assert code == 128 + signal.SIGTERM and time.monotonic() - started < 5
        stream.cancel()


async def test_draining_refuses_new_calls_while_in_flight_ones_finish(slow_repo: Path) -> None:
    async with running_app(slow_repo, shutdown_grace_seconds=30, shutdown_refuse_seconds=1.0) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        in_flight = asyncio.ensure_future(stub.Predict(slow_request(600, 2.0), timeout=60))
        while app.gate.active == 0:  # admitted: from here on it must be served
            await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(app.stop(grace=30))
        await asyncio.sleep(0)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Predict(slow_request(1, 3.0), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        response = await in_flight
        assert np.all(np.frombuffer(response.outputs[0].raw_data, np.float32) == 2.0)
        await stopping


EXIT_MARGIN_SECONDS = 15.0
"""docs/reliability.md: the whole exit takes at most the grace period plus this."""


@contextlib.contextmanager
def unreachable_collector(fault: str) -> Iterator[str]:
    """An OTLP endpoint that fails: a port nothing listens on, or a socket that accepts and never reads."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        if fault == "never-reads":
            sock.listen(64)  # the kernel completes every handshake; nobody ever reads what is sent
            yield f"http://127.0.0.1:{port}"
            return
    yield f"http://127.0.0.1:{port}"  # closed: connections are refused


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("fault", ["dead-port", "never-reads"])
async def test_an_unreachable_collector_does_not_hold_the_exit(slow_repo: Path, protocol: str, fault: str) -> None:
    grace = 1.0
    with unreachable_collector(fault) as endpoint:
        served = await serve(slow_repo, grace, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                             OTEL_EXPORTER_OTLP_PROTOCOL=protocol, OTEL_TRACES_SAMPLER="always_on",
                             OTEL_BSP_SCHEDULE_DELAY="200", OTEL_METRIC_EXPORT_INTERVAL="500")
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            # enough spans that exports queue up behind the collector (with 100 or more calls the SDK's own exit
            # handlers used to hold the process for 25-30 s)
            for value in range(200):
                await stub.Predict(slow_request(1, float(value)))
        await asyncio.sleep(2.0)  # exports are under way, waiting on the collector
        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(served.process.wait(), grace + EXIT_MARGIN_SECONDS + 30)
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed <= grace + EXIT_MARGIN_SECONDS, f"the exit took {elapsed:.1f} s"


async def test_callers_flooding_a_stopping_server_hear_only_ok_or_unavailable() -> None:
    """Callers that keep sending through a shutdown: gRPC's core ends the calls it had received but not yet handed
    to a handler, when the server stops, as CANCELLED (grpc/grpc#41785); Vigil's client reports those as
    Unavailable, like the calls the draining server refused, so every call is answered OK or Unavailable."""
    served = await serve(DEFAULT_MODELS_DIR, grace=3)
    rows = np.zeros((1, 30), np.float32)
    outcomes: collections.Counter[str] = collections.Counter()
    signalled = asyncio.Event()

    async def caller() -> None:
        async with AsyncClient(served.target, timeout=10) as client:
            while True:
                try:
                    await client.predict("breast_cancer", rows)
                    outcomes["OK"] += 1
                except Unavailable:
                    outcomes["Unavailable"] += 1
                    if signalled.is_set() and served.process.returncode is not None:
                        return
                except VigilError as exc:
                    outcomes[type(exc).__name__] += 1
                    return

    callers = [asyncio.create_task(caller()) for _ in range(16)]
    await asyncio.sleep(1.5)
    served.process.send_signal(signal.SIGTERM)
    signalled.set()
    assert await asyncio.wait_for(served.process.wait(), 30) == 0
    await asyncio.wait_for(asyncio.gather(*callers), 30)
    assert outcomes["OK"] > 0 and outcomes["Unavailable"] > 0
    assert set(outcomes) == {"OK", "Unavailable"}, outcomes
