"""The floor server streams its canned Telemetry frame to every subscriber on a shared 100 ms tick; `--pin` confines
the servers under test."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest

from bench import run
from bench.run import Server
from vigil.protos.vigil.v1 import telemetry_pb2


def test_floor_server_streams_a_canned_frame_every_tick_to_each_subscriber(tmp_path: Path) -> None:
    floor = Server(tmp_path, floor=True)

    async def read(seconds: float) -> list[list[bytes]]:
        async with grpc.aio.insecure_channel(floor.target) as channel:
            call = channel.unary_stream("/vigil.v1.Inference/Telemetry", request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)
            frames: list[list[bytes]] = [[], []]

            async def subscribe(index: int) -> None:
                async for frame in call(telemetry_pb2.TelemetryRequest(interval_ms=100).SerializeToString()):
                    frames[index].append(frame)

            tasks = [asyncio.create_task(subscribe(i)) for i in range(2)]
            await asyncio.sleep(seconds)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return frames

    try:
        started = time.monotonic()
        frames = asyncio.run(read(1.0))
        elapsed = time.monotonic() - started
    finally:
        floor.stop()
    for received in frames:
        assert 5 <= len(received) <= elapsed * 10 + 1, len(received)  # 10 a second at most, not stalled
        parsed = telemetry_pb2.TelemetryFrame.FromString(received[0])
        assert [m.model for m in parsed.models][:2] == ["tabular", "tabular_nobatch"]
        assert len(set(received)) == 1  # the same canned frame each time


def test_pin_confines_every_thread_of_a_server_under_test_and_not_a_stand_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = min(os.sched_getaffinity(0))
    monkeypatch.setattr(run, "SERVER_CPUS", {cpu})
    under_test, stand_in = Server(tmp_path, floor=True), Server(tmp_path, floor=True, pinned=False)
    try:
        threads = os.listdir(f"/proc/{under_test.pid}/task")
        assert len(threads) > 1  # gRPC's threads too, not only the main one
        assert all(os.sched_getaffinity(int(t)) == {cpu} for t in threads)
        assert os.sched_getaffinity(stand_in.pid) == os.sched_getaffinity(0)
    finally:
        under_test.stop()
        stand_in.stop()
