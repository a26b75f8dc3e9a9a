"""Telemetry subscribers for the benchmark: N streams at an interval, reading frames as bytes (no parsing, so the
subscribers spend as little of the machine as they can), until SIGTERM; prints frames received per stream and the
bytes of all of them."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

import grpc

from vigil.protos.vigil.v1 import telemetry_pb2

METHOD = "/vigil.v1.Inference/Telemetry"


def _raw(value: Any) -> Any:
    return value


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--interval-ms", type=int, default=100)
    args = parser.parse_args()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    received = [0] * args.count
    size = [0]
    request = telemetry_pb2.TelemetryRequest(interval_ms=args.interval_ms).SerializeToString()
    async with grpc.aio.insecure_channel(args.target) as channel:
        call = channel.unary_stream(METHOD, request_serializer=_raw, response_deserializer=_raw)

        async def subscribe(index: int) -> None:
            async for frame in call(request):
                received[index] += 1
                size[0] += len(frame)

        tasks = [asyncio.create_task(subscribe(i)) for i in range(args.count)]
        print("subscribed", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"frames": received, "bytes": size[0]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
