"""The floor: a bare grpc.aio server with no model and no Vigil code. Predict returns a canned response; Telemetry
streams a canned frame to every subscriber on one shared tick.

The benchmark loads it exactly as it loads Vigil, so its CPU-seconds per 1000 calls are what gRPC, protobuf
and asyncio cost per call on this machine before any serving work (for BatchPredict, which answers with canned
items, per item), and its CPU per streamed frame is what gRPC
costs per message before any telemetry work.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import telemetry_pb2 as tpb

RESPONSE = pb.PredictResponse(
    request_id="0" * 32, model_name="tabular", model_version=1,
    outputs=[from_array("label", np.zeros(1, np.int64)), from_array("probabilities", np.zeros((1, 2), np.float32))],
    predicted_labels=["benign"], predicted_probabilities=[0.9],
)

_BATCH_RESPONSES: dict[int, pb.BatchPredictResponse] = {}


def batch_response(items: int) -> pb.BatchPredictResponse:
    """A canned BatchPredict answer of `items` results, each the canned Predict answer: what parsing the request
    and serializing the answer cost gRPC and protobuf per item, before any work."""
    response = _BATCH_RESPONSES.get(items)
    if response is None:
        response = _BATCH_RESPONSES[items] = pb.BatchPredictResponse(results=[
            pb.BatchPredictResult(status=pb.ItemStatus(code=0), response=RESPONSE) for _ in range(items)])
    return response


_BOUNDS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]
_LATENCY = tpb.LatencySummary(count=100, mean_ms=60.0, p50_ms=55.0, p90_ms=95.0, p99_ms=130.0)
FRAME = tpb.TelemetryFrame(
    timestamp_unix_nanos=time.time_ns(), interval_ms=100, uptime_seconds=10.0, sequence=1,
    models=[tpb.ModelTelemetry(
        model=name, version="1", state="READY", requests=100, requests_total=10_000, rows=100, rows_total=10_000,
        requests_per_second=1000.0, rows_per_second=1000.0, requests_per_second_since_start=900.0,
        request_latency=_LATENCY, queue_latency=_LATENCY, inference_latency=_LATENCY,
        batch_size=tpb.Distribution(bounds=_BOUNDS, counts=[10, 20, 5, 1] + [0] * 8, mean=1.8), is_default=True)
        for name in ("tabular", "tabular_nobatch", "tabular_quality", "text", "text_nobatch")],
).SerializeToString()
"""About the size of one of Vigil's frames for the benchmark's models under load."""


class Ticker:
    """Wakes every subscriber each 100 ms, as one shared tick."""

    def __init__(self) -> None:
        self.waiting: set[asyncio.Event] = set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            for event in self.waiting:
                event.set()


def _raw(value: Any) -> Any:
    return value


async def main() -> None:
    ticker = Ticker()

    async def predict(request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        return RESPONSE

    async def batch_predict(request: pb.BatchPredictRequest,
                            context: grpc.aio.ServicerContext) -> pb.BatchPredictResponse:
        return batch_response(len(request.requests))

    async def telemetry(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        wake = asyncio.Event()
        ticker.waiting.add(wake)
        try:
            while True:
                await wake.wait()
                wake.clear()
                yield FRAME
        finally:
            ticker.waiting.discard(wake)

    handlers = {
        "Predict": grpc.unary_unary_rpc_method_handler(predict, request_deserializer=pb.PredictRequest.FromString,
                                                       response_serializer=pb.PredictResponse.SerializeToString),
        "BatchPredict": grpc.unary_unary_rpc_method_handler(
            batch_predict, request_deserializer=pb.BatchPredictRequest.FromString,
            response_serializer=pb.BatchPredictResponse.SerializeToString),
        "Telemetry": grpc.unary_stream_rpc_method_handler(telemetry, request_deserializer=_raw,
                                                          response_serializer=_raw),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("vigil.v1.Inference", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tick = asyncio.create_task(ticker.run())  # noqa: F841 (kept alive until the process ends)
    print(f"floor: gRPC listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
