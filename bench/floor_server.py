"""The floor: a bare grpc.aio server whose Predict returns a canned response, with no model and no Vigil code.

The benchmark loads it exactly as it loads Vigil, so its CPU-seconds per 1000 calls are what gRPC, protobuf
and asyncio cost per call on this machine before any serving work.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protos.tensors import from_array
from protos.vigil.v1 import inference_pb2 as pb
from protos.vigil.v1 import inference_pb2_grpc

RESPONSE = pb.PredictResponse(
    request_id="0" * 32, model_name="tabular", model_version=1,
    outputs=[from_array("label", np.zeros(1, np.int64)), from_array("probabilities", np.zeros((1, 2), np.float32))],
    predicted_labels=["benign"], predicted_probabilities=[0.9],
)


class FloorServicer(inference_pb2_grpc.InferenceServicer):
    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        return RESPONSE


async def main() -> None:
    server = grpc.aio.server()
    inference_pb2_grpc.add_InferenceServicer_to_server(FloorServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"floor: gRPC listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
