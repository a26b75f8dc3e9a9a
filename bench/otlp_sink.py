"""An OTLP/gRPC sink for the telemetry-cost benchmark: accepts traces and metrics and discards them unparsed.

It stands in for a collector on another machine, so it spends as little of this machine's CPU as it can: requests
stay bytes, and every answer is the empty Export response (an empty message is zero bytes on the wire).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

SERVICES = ("opentelemetry.proto.collector.trace.v1.TraceService",
            "opentelemetry.proto.collector.metrics.v1.MetricsService")


async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b""


def _raw(value: Any) -> Any:
    return value


async def main() -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(export, request_deserializer=_raw, response_serializer=_raw)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(s, {"Export": handler}) for s in SERVICES])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"sink: gRPC listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
