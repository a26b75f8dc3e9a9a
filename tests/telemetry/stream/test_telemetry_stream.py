"""The Telemetry stream against a real server: exact counts, validation, limits, slow subscribers, events, leaks."""

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

Frame = telemetry_pb2.TelemetryFrame
Kind = telemetry_pb2.TelemetryEvent.Kind


def rows(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 30)).astype(np.float32) * 10 + 15


def request(n: int) -> pb.PredictRequest:
    return pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", rows(n))])


def model(frame: Frame, name: str = "breast_cancer") -> telemetry_pb2.ModelTelemetry:
    return next(m for m in frame.models if m.model == name)


async def test_frames_count_exactly_the_traffic_sent(model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        stream = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100, models=["breast_cancer"]))
        first = await stream.read()
        assert first.sequence == 1 and [m.model for m in first.models] == ["breast_cancer"]
        before = model(first).requests_total
        sizes = [1, 2, 3, 5, 8] * 6
        for n in sizes:
            await stub.Predict(request(n))
        bad = pb.PredictRequest(model_name="breast_cancer", inputs=[from_array("features", np.ones((2, 3), "f4"))])
        for _ in range(4):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Predict(bad)
        seen = {"requests": 0, "rows": 0, "errors": 0, "frames": 0}
        last = first
        deadline = time.monotonic() + 10
        while model(last).requests_total < before + len(sizes) + 4 and time.monotonic() < deadline:
            last = await stream.read()
            entry = model(last)
            seen["requests"] += entry.requests
            seen["rows"] += entry.rows
            seen["errors"] += entry.errors.get("INVALID_ARGUMENT", 0)
            seen["frames"] += 1
        stream.cancel()
    entry = model(last)
    assert entry.requests_total - before == len(sizes) + 4 == seen["requests"]
    assert seen["rows"] == sum(sizes) and seen["errors"] == 4 == entry.errors_total["INVALID_ARGUMENT"]
    assert last.sequence == seen["frames"] + 1 and last.interval_ms in range(80, 400)
    assert entry.state == "READY" and entry.is_default and last.server.state == "SERVING"
    assert last.server.memory_bytes > 0 and last.server.subscribers == 1


async def test_latency_and_batch_sections_describe_the_interval(model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        stream = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=500, models=["breast_cancer"]))
        await stream.read()
        await asyncio.gather(*(stub.Predict(request(3)) for _ in range(40)))
        frames = [await stream.read()]
        while model(frames[-1]).requests_total < 40:
            frames.append(await stream.read())
        frames.append(await stream.read())  # a frame can close between a call's stages; the next one has the rest
        stream.cancel()
    entries = [model(f) for f in frames]
    assert sum(e.request_latency.count for e in entries) == sum(e.requests for e in entries) == 40
    assert sum(e.queue_latency.count for e in entries) == 40
    busy = max(frames, key=lambda f: model(f).requests)
    entry = model(busy)
    assert entry.requests > 0 and abs(entry.request_latency.count - entry.requests) <= 1
    assert 0 < entry.request_latency.p50_ms <= entry.request_latency.p90_ms <= entry.request_latency.p99_ms
    assert entry.inference_latency.count >= 1
    assert sum(entry.batch_size.counts) == entry.inference_latency.count
    assert len(entry.batch_size.counts) == len(entry.batch_size.bounds) + 1 and entry.batch_size.mean >= 3
    assert entry.requests_per_second == pytest.approx(entry.requests / (busy.interval_ms / 1000), rel=0.05)


@pytest.mark.parametrize("fields", [{"interval_ms": 50}, {"interval_ms": 60_001}, {"sections": ["models", "nope"]}])
async def test_out_of_range_requests_are_invalid_argument(model_repo: Path, fields: dict) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stream = inference_pb2_grpc.InferenceStub(channel).Telemetry(telemetry_pb2.TelemetryRequest(**fields))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stream.read()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("interval_ms" in (error.value.details() or "")) or ("nope" in (error.value.details() or ""))


async def test_subscriber_limit_answers_resource_exhausted(model_repo: Path) -> None:
    async with running_app(model_repo, telemetry={"max_subscribers": 2}) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        streams = [stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100)) for _ in range(2)]
        for stream in streams:
            await stream.read()
        extra = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await extra.read()
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "2" in (error.value.details() or "")
        streams[0].cancel()
        for _ in range(50):  # the slot frees once the server sees the cancellation
            if app.telemetry_hub is not None and app.telemetry_hub.subscriber_count < 2:
                break
            await asyncio.sleep(0.02)
        again = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100))
        assert (await again.read()).sequence == 1
        again.cancel()
        streams[1].cancel()


async def test_a_stalled_subscriber_delays_neither_others_nor_requests(model_repo: Path) -> None:
    async with running_app(model_repo) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as fast_channel, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as slow_channel:
        hub = app.telemetry_hub
        assert hub is not None
        fast = inference_pb2_grpc.InferenceStub(fast_channel)
        stalled = inference_pb2_grpc.InferenceStub(slow_channel).Telemetry(
            telemetry_pb2.TelemetryRequest(interval_ms=100))
        await stalled.read()  # a gRPC subscriber that reads nothing from now on
        # ...and one whose stream is stuck, as a stream is when its writes block: it never takes a frame.
        stuck = hub.subscribe(100)
        stream = fast.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100))
        arrivals = []
        calls = 0
        stop = time.monotonic() + 4
        while time.monotonic() < stop:
            frame = await asyncio.wait_for(stream.read(), timeout=2)
            arrivals.append(time.monotonic())
            await fast.Predict(request(2), timeout=2)
            calls += 1
        stream.cancel()
        late = await asyncio.wait_for(stuck.__anext__(), timeout=1)
        stuck.close()
        stalled.cancel()
    gaps = np.diff(arrivals)
    assert len(arrivals) >= 25 and gaps.max() < 0.5, f"fast subscriber waited {gaps.max():.2f} s"
    assert calls == len(arrivals) and frame.sequence == len(arrivals) and frame.dropped_frames == 0
    stuck_frame = Frame.FromString(late)
    assert stuck_frame.sequence == 1 and stuck_frame.dropped_frames >= 25  # only the newest frame was kept
    assert stuck_frame.timestamp_unix_nanos >= frame.timestamp_unix_nanos


async def test_events_reach_every_subscriber_once_in_order(model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        streams = [stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100)) for _ in range(2)]
        for stream in streams:
            await stream.read()
        hub = app.telemetry_hub
        assert hub is not None

        async def publish() -> None:
            for i in range(30):
                hub.publish(Kind.MODEL_LOADED, model="m", version=str(i), message="test")
                await asyncio.sleep(0.01)

        async def collect(stream: grpc.aio.UnaryStreamCall, pause: float) -> list[telemetry_pb2.TelemetryEvent]:
            got: list[telemetry_pb2.TelemetryEvent] = []
            while len(got) < 30:
                frame = await asyncio.wait_for(stream.read(), timeout=5)
                got.extend(frame.events)
                await asyncio.sleep(pause)  # the second subscriber reads slowly: frames drop, events must not
            return got

        _, fast, slow = await asyncio.gather(publish(), collect(streams[0], 0), collect(streams[1], 0.35))
        for stream in streams:
            stream.cancel()
    for got in (fast, slow):
        assert [e.version for e in got] == [str(i) for i in range(30)]
        assert [e.sequence for e in got] == list(range(got[0].sequence, got[0].sequence + 30))


async def test_shutdown_sends_draining_and_ends_streams_cleanly(model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stream = inference_pb2_grpc.InferenceStub(channel).Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=60_000))
        await stream.read()
        stopping = asyncio.create_task(app.stop(grace=5))
        last = await asyncio.wait_for(stream.read(), timeout=5)
        assert [e.kind for e in last.events] == [Kind.SERVER_DRAINING] and last.server.state == "DRAINING"
        assert await asyncio.wait_for(stream.read(), timeout=5) is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
        await stopping


async def test_a_thousand_subscribe_cancel_cycles_leak_nothing(model_repo: Path) -> None:
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        hub = app.telemetry_hub
        assert hub is not None

        async def cycle() -> None:
            stream = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100, sections=["server"]))
            await stream.read()
            stream.cancel()

        await asyncio.gather(*(cycle() for _ in range(50)))
        await asyncio.sleep(0.3)
        tasks_before = len(asyncio.all_tasks())
        for _ in range(19):
            await asyncio.gather(*(cycle() for _ in range(50)))
        for _ in range(100):
            if hub.subscriber_count == 0 and len(asyncio.all_tasks()) <= tasks_before:
                break
            await asyncio.sleep(0.05)
        assert hub.subscriber_count == 0
        assert len(asyncio.all_tasks()) <= tasks_before
        assert len(hub._snapshots) <= 3


async def test_in_flight_counts_calls_not_the_subscribers_reading(model_repo: Path) -> None:
    async with running_app(model_repo) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        viewers = [stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100)) for _ in range(3)]
        frames = [await viewer.read() for viewer in viewers]
        for _ in range(3):
            frames.append(await viewers[0].read())
        last = frames[-1]
        assert last.server.subscribers == 3 and last.server.in_flight == 0
        for viewer in viewers:
            viewer.cancel()
