"""The native `vigil.v1.Inference` service: thin handlers that convert, delegate to the DataPlane and convert back."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from protos.timing import SERVER_TIMING_KEY, format_timing
from protos.vigil.v1 import inference_pb2 as pb
from protos.vigil.v1 import inference_pb2_grpc, telemetry_pb2
from server import convert
from server.dataplane import DataPlane
from server.errors import InvalidInput, NotSupported, maps_errors
from server.requests import InferRequest

logger = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext


def deadline_of(context: Context) -> float | None:
    """The call's deadline as a `time.monotonic()` instant, or None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """Serves Predict, BatchPredict, ListModels and GetModelMetadata over one DataPlane."""

    def __init__(self, dataplane: DataPlane, *, max_batch_items: int) -> None:
        self._dataplane = dataplane
        self._max_batch_items = max_batch_items

    @maps_errors
    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        result = await self._dataplane.infer(convert.to_request(request), deadline=deadline_of(context))
        context.set_trailing_metadata(((SERVER_TIMING_KEY, format_timing(result.timings, result.batch_size)),))
        return convert.to_response(result)

    @maps_errors
    async def BatchPredict(self, request: pb.BatchPredictRequest, context: Context) -> pb.BatchPredictResponse:
        if len(request.requests) > self._max_batch_items:
            raise InvalidInput(
                f"BatchPredict has {len(request.requests)} items, over the limit "
                f"max_batch_items={self._max_batch_items}"
            )
        decoded = [convert.to_request_or_error(item) for item in request.requests]
        requests = [d for d in decoded if isinstance(d, InferRequest)]
        outcomes = iter(await self._dataplane.infer_many(requests, deadline=deadline_of(context)))
        return convert.to_batch_response([next(outcomes) if isinstance(d, InferRequest) else d for d in decoded])

    @maps_errors
    async def Telemetry(
        self, request: telemetry_pb2.TelemetryRequest, context: Context
    ) -> AsyncIterator[telemetry_pb2.TelemetryFrame]:
        raise NotSupported("the Telemetry stream is not available in this version of the server")
        yield  # pragma: no cover - makes this an async generator

    @maps_errors
    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[convert.to_model_status(m) for m in self._dataplane.repository.models])

    @maps_errors
    async def GetModelMetadata(self, request: pb.GetModelMetadataRequest, context: Context) -> pb.ModelMetadata:
        repository = self._dataplane.repository
        if not request.model_name:
            raise InvalidInput("model_name is empty; name the model to describe")
        model = repository.get(request.model_name)
        version = model.find(request.model_version)
        return convert.to_model_metadata(model, version)
