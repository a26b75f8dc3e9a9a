"""Slow or dead neighbours never slow inference: a collector that accepts connections and never answers, an
Alertmanager that does the same, and Telemetry subscribers (gRPC and the browser's stream) that never read. The
server keeps answering promptly, and still stops within its bounds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import running_app
from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc, telemetry_pb2
from vigil.server.settings import AlertRuleSettings, AlertSettings

ROWS = np.random.default_rng(3).normal(10.0, 3.0, size=(4, 30)).astype(np.float32)


class BlackHole:
    """A TCP server that accepts every connection and never reads or answers."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> BlackHole:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()


async def test_dead_collector_alertmanager_and_stalled_subscribers_do_not_slow_inference(
        model_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with BlackHole() as collector, BlackHole() as alertmanager:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.port}")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
        always = AlertRuleSettings(name="AlwaysFiring", signal="model_ready", op="==", threshold=1.0,
                                   model="breast_cancer")
        alerts = AlertSettings(rules=[always], interval_seconds=0.2, slos=[],
                               alertmanager_url=f"http://127.0.0.1:{alertmanager.port}")
        async with running_app(model_repo, alerts=alerts) as app:
            target = f"127.0.0.1:{app.grpc_port}"
            async with grpc.aio.insecure_channel(target) as watchers, \
                    grpc.aio.insecure_channel(target) as channel:
                stalled = [inference_pb2_grpc.InferenceStub(watchers).Telemetry(
                    telemetry_pb2.TelemetryRequest(interval_ms=100)) for _ in range(30)]
                browsers = []
                for _ in range(10):  # the web dashboard's stream, from browsers that stopped reading
                    reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
                    writer.write(b"GET /telemetry/stream?interval_ms=100 HTTP/1.1\r\nHost: x\r\n\r\n")
                    browsers.append(writer)
                stub = inference_pb2_grpc.InferenceStub(channel)
                request = pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", ROWS)])
                latencies: list[float] = []

                async def caller() -> None:
                    for _ in range(50):
                        started = time.perf_counter()
                        response = await stub.Predict(request, timeout=10)
                        latencies.append(time.perf_counter() - started)
                        assert len(response.predicted_labels) == len(ROWS)

                hub = app.telemetry_hub
                assert hub is not None
                # gRPC and socket buffers absorb a few seconds of frames; streams whose writes block for good look
                # like these subscriptions, which never take a frame.
                stuck = [hub.subscribe(100) for _ in range(20)]
                await asyncio.sleep(1.0)  # exports and notifications are under way
                await asyncio.gather(*(caller() for _ in range(8)))
                dropped = sum(s.dropped for s in stuck)
                for subscription in stuck:
                    subscription.close()
                for call in stalled:
                    call.cancel()
                for writer in browsers:
                    writer.close()
            # Every call answered, none near the 5 to 10 s that a blocked exporter or notifier would cost.
            assert len(latencies) == 400 and max(latencies) < 2.0, max(latencies)
            assert collector.connections >= 1 and alertmanager.connections >= 1  # both were really tried
            assert dropped > 0  # the subscribers really were behind
            started = time.monotonic()
        # stopping with the collector still dead is bounded: the flushes give up instead of waiting for it
        assert time.monotonic() - started < 20


async def test_connections_closed_for_age_do_not_fail_calls(model_repo: Path) -> None:
    from vigil.clients import AsyncClient

    async with running_app(model_repo, max_connection_age_seconds=0.3) as app:
        options = [("grpc.lb_policy_name", "round_robin")]
        async with AsyncClient(f"dns:///127.0.0.1:{app.grpc_port}", timeout=10, channel_options=options) as client:
            answered = 0
            deadline = time.monotonic() + 2.0  # several connection lifetimes
            while time.monotonic() < deadline:
                result = await client.predict("breast_cancer", ROWS)
                answered += len(result.labels) == len(ROWS)
                await asyncio.sleep(0.02)
    assert answered > 20
