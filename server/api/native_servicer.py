"""The native `vigil.v1.Inference` service: thin handlers that convert, delegate to the DataPlane and convert back."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from vigil.protos.timing import SERVER_TIMING_KEY, format_timing
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc, rollout_pb2, telemetry_pb2
from vigil.server.api import native_convert, rollout_convert
from vigil.server.errors import InvalidInput, NotSupported, ServerError, maps_errors
from vigil.server.inference.dataplane import DataPlane
from vigil.server.inference.feedback import FeedbackRequest, check_subject, forget, give_feedback
from vigil.server.inference.outcomes import Outcomes
from vigil.server.inference.requests import InferRequest
from vigil.telemetry.calls.context import CallItem, annotate_audit, annotate_call, annotate_items
from vigil.telemetry.stream.hub import TelemetryHub

logger = logging.getLogger(__name__)

Context: TypeAlias = grpc.aio.ServicerContext


def deadline_of(context: Context) -> float | None:
    """The call's deadline as a `time.monotonic()` instant, or None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _frame_bytes(frame: bytes | telemetry_pb2.TelemetryFrame) -> bytes:
    return frame if isinstance(frame, bytes) else frame.SerializeToString()


class FramesAsBytes:
    """Stands in for the server when the Inference service registers: the Telemetry handler's serializer passes
    frames that are already bytes through unchanged."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        telemetry = handlers.get("Telemetry")
        if telemetry is not None:
            handlers = {**handlers, "Telemetry": grpc.unary_stream_rpc_method_handler(
                telemetry.unary_stream, telemetry.request_deserializer, _frame_bytes)}
        self._server.add_registered_method_handlers(service, handlers)


def add_inference_servicer(servicer: InferenceServicer, server: Any) -> None:
    """`add_InferenceServicer_to_server`, with Telemetry frames sent as the bytes the hub serialized."""
    inference_pb2_grpc.add_InferenceServicer_to_server(servicer, FramesAsBytes(server))


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """Serves Predict, BatchPredict, ListModels, LoadModel, UnloadModel, SetRollout, GetRollout and GetModelMetadata
    over one DataPlane."""

    def __init__(self, dataplane: DataPlane, *, max_batch_items: int, hub: TelemetryHub | None = None,
                 outcomes: Outcomes | None = None) -> None:
        self._dataplane = dataplane
        self._max_batch_items = max_batch_items
        self._hub = hub
        self._outcomes = outcomes

    def _check_items(self, method: str, items: int) -> None:
        if items > self._max_batch_items:
            raise InvalidInput(f"{method} has {items} items, over the limit max_batch_items={self._max_batch_items}")

    @maps_errors
    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        subject = request.subject_id
        if subject:
            check_subject(subject)
        result = await self._dataplane.infer(native_convert.to_request(request), deadline=deadline_of(context),
                                             metadata=context.invocation_metadata)
        if subject and self._outcomes is not None:
            self._outcomes.remember(result.request_id, result.model_name, str(result.model_version),
                                    subject_id=subject)
        context.set_trailing_metadata(((SERVER_TIMING_KEY, format_timing(result.timings, result.batch_size)),))
        return native_convert.to_response(result)

    @maps_errors
    async def BatchPredict(self, request: pb.BatchPredictRequest, context: Context) -> pb.BatchPredictResponse:
        self._check_items("BatchPredict", len(request.requests))
        decoded = [native_convert.to_request_or_error(item) for item in request.requests]
        requests = [d for d in decoded if isinstance(d, InferRequest)]
        outcomes = iter(await self._dataplane.infer_many(requests, deadline=deadline_of(context),
                                                         metadata=context.invocation_metadata))
        results = [next(outcomes) if isinstance(d, InferRequest) else d for d in decoded]
        if self._outcomes is not None:
            for item, result in zip(request.requests, results, strict=True):
                if item.subject_id and not isinstance(result, ServerError):
                    self._outcomes.remember(result.request_id, result.model_name, str(result.model_version),
                                            subject_id=item.subject_id)
        annotate_items([native_convert.call_item(item, result) for item, result in zip(request.requests, results,
                                                                                 strict=True)])
        return native_convert.to_batch_response(results)

    @maps_errors
    async def Telemetry(self, request: telemetry_pb2.TelemetryRequest, context: Context) -> AsyncIterator[bytes]:
        """Frames, already serialized (see `FRAMES_AS_BYTES`): one shared encoding per tick for all subscribers."""
        if self._hub is None:
            raise NotSupported("telemetry is turned off on this server (VIGIL_TELEMETRY__ENABLED=false)")
        subscription = self._hub.subscribe(request.interval_ms, request.models, request.sections, request.member)
        try:
            async for frame in subscription:
                yield frame
        finally:
            subscription.close()

    @maps_errors
    async def Feedback(self, request: pb.FeedbackRequest, context: Context) -> pb.FeedbackResponse:
        [given] = await give_feedback(self._outcomes, [FeedbackRequest(request.request_id, request.labels,
                                                                       request.subject_id)])
        if isinstance(given, ServerError):
            raise given
        # The server's id of the prediction: the one sent may be an id the caller chose, which is never logged.
        annotate_call(request_id=given.request_id, model=given.model, version=int(given.version))
        return native_convert.to_feedback_response(given)

    @maps_errors
    async def BatchFeedback(self, request: pb.BatchFeedbackRequest, context: Context) -> pb.BatchFeedbackResponse:
        self._check_items("BatchFeedback", len(request.items))
        outcomes = await give_feedback(self._outcomes, [FeedbackRequest(item.request_id, item.labels,
                                                                        item.subject_id) for item in request.items])
        results = []
        items = []
        for given in outcomes:
            if isinstance(given, ServerError):
                results.append(pb.BatchFeedbackResult(status=native_convert.item_status(given)))
                items.append(CallItem("", "", "", given))  # the id sent may be a caller's own: not logged
            else:
                results.append(pb.BatchFeedbackResult(status=pb.ItemStatus(code=0),
                                                      response=native_convert.to_feedback_response(given)))
                items.append(CallItem(given.request_id, given.model, given.version))
        annotate_items(items)
        return pb.BatchFeedbackResponse(results=results)

    @maps_errors
    async def Forget(self, request: pb.ForgetRequest, context: Context) -> pb.ForgetResponse:
        erased = await forget(self._outcomes, request.subject_id)
        fields = {"subject_hash": self._outcomes.hash_subject(request.subject_id) if self._outcomes else "",
                  "erased_predictions": erased.predictions, "erased_outcomes": erased.outcomes}
        annotate_audit(**fields)
        logger.info("erased the predictions and outcomes of a subject", extra={"fields": fields})
        return pb.ForgetResponse(predictions=erased.predictions, outcomes=erased.outcomes)

    @maps_errors
    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        models = self._dataplane.repository.models
        return pb.ListModelsResponse(models=[native_convert.to_model_status(m) for m in models])

    @maps_errors
    async def LoadModel(self, request: pb.LoadModelRequest, context: Context) -> pb.LoadModelResponse:
        model = await self._dataplane.repository.load_model(request.model_name)
        return pb.LoadModelResponse(model=native_convert.to_model_status(model))

    @maps_errors
    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Context) -> pb.UnloadModelResponse:
        model = await self._dataplane.repository.unload_model(request.model_name)
        return pb.UnloadModelResponse(model=native_convert.to_model_status(model))

    @maps_errors
    async def SetRollout(self, request: rollout_pb2.SetRolloutRequest, context: Context) -> rollout_pb2.RolloutStatus:
        config = None if request.clear else rollout_convert.to_rollout_config(request.rollout)
        rollouts = self._dataplane.rollouts
        return rollout_convert.to_rollout_status(request.model_name, rollouts.set(request.model_name, config))

    @maps_errors
    async def GetRollout(self, request: rollout_pb2.GetRolloutRequest, context: Context) -> rollout_pb2.RolloutStatus:
        if not request.model_name:
            raise InvalidInput("model_name is empty; name the model whose rollout to show")
        return rollout_convert.to_rollout_status(request.model_name,
                                                 self._dataplane.rollouts.get(request.model_name))

    @maps_errors
    async def GetModelMetadata(self, request: pb.GetModelMetadataRequest, context: Context) -> pb.ModelMetadata:
        repository = self._dataplane.repository
        if not request.model_name:
            raise InvalidInput("model_name is empty; name the model to describe")
        model = repository.get(request.model_name)
        version = model.find(request.model_version)
        return native_convert.to_model_metadata(model, version)
