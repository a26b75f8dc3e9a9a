"""`AsyncClient`, the asyncio client: the same calls as `Client`, awaited."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vigil.clients import convert
from vigil.clients.base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TARGET,
    BatchItem,
    ClientBase,
    InputsLike,
    message_limits,
)
from vigil.clients.channel import TLS, open_aio_channel
from vigil.clients.errors import PredictionNotFound, VigilError, error_for, error_from_rpc
from vigil.clients.types import Erasure, FeedbackReceipt, ModelInfo, ModelSummary, Prediction, Rollout, RolloutInfo
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc, rollout_pb2, telemetry_pb2


class AsyncClient(ClientBase):
    """An asyncio client for one Vigil server, with the same calls as `Client`.

    >>> async with AsyncClient("127.0.0.1:8001") as client:
    ...     result = await client.predict("breast_cancer", rows)
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        tls: TLS | None = None,
        token: str | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        super().__init__(target, timeout)
        self._channel = open_aio_channel(target, [*message_limits(max_message_bytes), *channel_options], tls=tls,
                             token=token)
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (the context manager does it on exit)."""
        await self._channel.close()

    async def _inputs(self, model: str, version: int, inputs: InputsLike) -> Mapping[str, npt.ArrayLike]:
        if isinstance(inputs, Mapping):
            return inputs
        name = self._input_names.get((model, version)) or self._single_input(
            model, version, await self.model_metadata(model, version)
        )
        return {name: inputs}

    async def predict(
        self,
        model: str,
        inputs: InputsLike,
        *,
        version: int = 0,
        outputs: Sequence[str] = (),
        timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        subject_id: str = "",
    ) -> Prediction:
        """Run one request; raises a VigilError subclass when the server refuses or fails it. `subject_id` (e.g. a
        patient) is kept only as a keyed hash, so that `forget` can erase the subject's predictions. `metadata` goes
        with the call (e.g. the sticky key of a model's rollout)."""
        request = convert.predict_request(
            model, await self._inputs(model, version, inputs), version=version, outputs=outputs,
            subject_id=subject_id)
        call = self._stub.Predict(request, timeout=self._deadline(timeout), metadata=tuple(metadata) or None)
        try:
            response = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return convert.prediction(response, convert.timing_from_metadata(trailing))

    async def batch_predict(
        self, items: Sequence[BatchItem], *, timeout: float | None = None
    ) -> list[Prediction | VigilError]:
        """Run many requests in one call; each item's result is a Prediction or the VigilError it got."""
        request = pb.BatchPredictRequest(
            requests=[convert.predict_request(m, await self._inputs(m, 0, x)) for m, x in items]
        )
        try:
            response = await self._stub.BatchPredict(request, timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return [
            convert.prediction(r.response) if r.status.code == 0 else error_for(r.status.code, r.status.message)
            for r in response.results
        ]

    async def feedback(self, request_id: str, labels: Sequence[str] | str, *, subject_id: str = "",
                       timeout: float | None = None) -> FeedbackReceipt:
        """Attach the true label(s) of an earlier prediction (one per row); PredictionNotFound when the server no
        longer holds it. `subject_id` is only ever stored as a keyed hash."""
        try:
            response = await self._stub.Feedback(convert.feedback_request(request_id, labels, subject_id),
                                                 timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, not_found=PredictionNotFound) from None
        return convert.feedback_receipt(response)

    async def batch_feedback(self, items: Sequence[tuple[str, Sequence[str] | str]], *,
                             timeout: float | None = None) -> list[FeedbackReceipt | VigilError]:
        """Many (request id, labels) items in one call; each gets its receipt or its own error."""
        request = pb.BatchFeedbackRequest(items=[convert.feedback_request(r, labels) for r, labels in items])
        try:
            response = await self._stub.BatchFeedback(request, timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return [convert.feedback_receipt(r.response) if r.status.code == 0
                else error_for(r.status.code, r.status.message, not_found=PredictionNotFound)
                for r in response.results]

    async def forget(self, subject_id: str, *, timeout: float | None = None) -> Erasure:
        """Erase every logged prediction and outcome of a subject (right to erasure; an admin call where the server
        keeps admin calls to admins). Matched by the keyed hash of `subject_id`, as sent with feedback."""
        try:
            response = await self._stub.Forget(pb.ForgetRequest(subject_id=subject_id), timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return Erasure(predictions=response.predictions, outcomes=response.outcomes)

    async def list_models(self, *, timeout: float | None = None) -> list[ModelSummary]:
        """Every model on the server, its default version and each version\'s state."""
        try:
            response = await self._stub.ListModels(pb.ListModelsRequest(), timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return convert.model_summaries(response)

    async def load_model(self, model: str, *, timeout: float | None = None) -> ModelSummary:
        """Load or reload a model from its folder on the server; the loaded versions serve until the new ones are
        ready. Raises LoadFailed (with the reason; what served still serves) or ModelNotFound."""
        try:
            response = await self._stub.LoadModel(pb.LoadModelRequest(model_name=model),
                                                  timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return convert.model_summary(response.model)

    async def unload_model(self, model: str, *, timeout: float | None = None) -> ModelSummary:
        """Unload every version of a model once its queued requests have finished."""
        try:
            response = await self._stub.UnloadModel(pb.UnloadModelRequest(model_name=model),
                                                    timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return convert.model_summary(response.model)

    async def set_rollout(self, model: str, rollout: Rollout | None, *, timeout: float | None = None
                          ) -> RolloutInfo:
        """Split the requests that name no version between `model`'s versions (None clears the split)."""
        request = rollout_pb2.SetRolloutRequest(model_name=model, clear=rollout is None)
        if rollout is not None:
            request.rollout.CopyFrom(convert.rollout_message(rollout))
        try:
            response = await self._stub.SetRollout(request, timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return convert.rollout_info(response)

    async def get_rollout(self, model: str, *, timeout: float | None = None) -> RolloutInfo:
        """The split in force for `model`, its phase and why it last changed."""
        try:
            response = await self._stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name=model),
                                                   timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return convert.rollout_info(response)

    async def model_metadata(self, model: str, version: int = 0, *, timeout: float | None = None) -> ModelInfo:
        """A model version\'s inputs, outputs, labels, providers and state (version 0: the default version)."""
        request = pb.GetModelMetadataRequest(model_name=model, model_version=version)
        try:
            response = await self._stub.GetModelMetadata(request, timeout=self._deadline(timeout))
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return convert.model_info(response)

    async def telemetry(self, *, interval_ms: int = 1000, models: Sequence[str] = (),
                        sections: Sequence[str] = (), member: str = ""
                        ) -> AsyncIterator[telemetry_pb2.TelemetryFrame]:
        """Frames of the Telemetry stream until the server ends it or the caller stops iterating (no deadline): of
        the server's whole fleet, or of one `member` of it (an id from `TelemetryFrame.members`)."""
        request = telemetry_pb2.TelemetryRequest(interval_ms=interval_ms, models=models, sections=sections,
                                                 member=member)
        call = self._stub.Telemetry(request)
        try:
            async for frame in call:
                yield frame
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The health status name (SERVING, NOT_SERVING, SERVICE_UNKNOWN) of the server or one service."""
        try:
            response = await self._health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self._deadline(timeout)
            )
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
