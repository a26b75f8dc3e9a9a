"""How the load generator talks to the server: pre-serialized requests per protocol and mode."""

from __future__ import annotations

from typing import Protocol

import grpc
import numpy as np

from vigil.protos.tensors import from_array, to_array
from vigil.protos.vigil.v1 import inference_pb2 as pb


def _identity(data: bytes) -> bytes:
    return data


class Calls(Protocol):
    rows_per_call: int

    async def check(self) -> None: ...

    async def send(self, i: int) -> None: ...


class NativeCalls:
    """Predict with one row per call, or BatchPredict with `rows_per_call` one-row items."""

    def __init__(self, channel: grpc.aio.Channel, mode: str, model: str, inputs: dict[str, np.ndarray],
                 rows_per_call: int, versions: dict[int, float] | None = None) -> None:
        n = len(next(iter(inputs.values())))
        singles = [pb.PredictRequest(model_name=model, inputs=[from_array(k, v[i : i + 1]) for k, v in inputs.items()])
                   for i in range(n)]
        if versions:  # each request names a version, drawn once per payload in proportion to the weights
            numbers = list(versions)
            weights = np.array([versions[v] for v in numbers], np.float64)
            drawn = np.random.default_rng(0).choice(numbers, size=n, p=weights / weights.sum())
            for single, number in zip(singles, drawn, strict=True):
                single.model_version = int(number)
        self.mode = mode
        self.rows_per_call = rows_per_call if mode == "batch" else 1
        if mode == "batch":
            self.messages = [pb.BatchPredictRequest(requests=[singles[(j + k) % n] for k in range(rows_per_call)])
                             for j in range(0, n, 7)]
            method = "/vigil.v1.Inference/BatchPredict"
        else:
            self.messages = singles
            method = "/vigil.v1.Inference/Predict"
        self.payloads = [m.SerializeToString() for m in self.messages]
        self._call = channel.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)

    async def check(self) -> None:
        raw = await self._call(self.payloads[0])
        if self.mode == "batch":
            response = pb.BatchPredictResponse.FromString(raw)
            codes = {r.status.code for r in response.results}
            assert codes == {0} and len(response.results) == self.rows_per_call, codes
        else:
            response = pb.PredictResponse.FromString(raw)
            assert response.outputs and to_array(response.outputs[0]).shape[0] == 1

    async def send(self, i: int) -> None:
        await self._call(self.payloads[i % len(self.payloads)])


class OipCalls:
    """ModelInfer of the Open Inference Protocol, one row per call, inputs in raw_input_contents."""

    DATATYPES = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32", "bool": "BOOL"}

    def __init__(self, channel: grpc.aio.Channel, model: str, inputs: dict[str, np.ndarray]) -> None:
        from vigil.protos.inference import grpc_service_pb2 as oip

        self.rows_per_call = 1
        n = len(next(iter(inputs.values())))
        self.messages = []
        for i in range(n):
            message = oip.ModelInferRequest(model_name=model)
            for name, values in inputs.items():
                row = np.ascontiguousarray(values[i : i + 1])
                message.inputs.add(name=name, datatype=self.DATATYPES[row.dtype.name], shape=row.shape)
                message.raw_input_contents.append(row.tobytes())
            self.messages.append(message)
        self.payloads = [m.SerializeToString() for m in self.messages]
        self._response = oip.ModelInferResponse
        self._call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                         request_serializer=_identity, response_deserializer=_identity)

    async def check(self) -> None:
        response = self._response.FromString(await self._call(self.payloads[0]))
        assert response.outputs and response.raw_output_contents

    async def send(self, i: int) -> None:
        await self._call(self.payloads[i % len(self.payloads)])


def build_calls(channel: grpc.aio.Channel, protocol: str, mode: str, model: str, inputs: np.lib.npyio.NpzFile,
                rows_per_call: int, versions: dict[int, float] | None = None) -> Calls:
    arrays = {k: inputs[k] for k in inputs.files}
    if protocol == "native":
        return NativeCalls(channel, mode, model, arrays, rows_per_call, versions)
    if protocol == "oip" and mode == "predict":
        return OipCalls(channel, model, arrays)
    raise ValueError(f"protocol {protocol} has no mode {mode}")
