"""The floor server streams its canned Telemetry frame to every subscriber on a shared 100 ms tick."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc

from bench.run import Server
from protos.vigil.v1 import telemetry_pb2


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
