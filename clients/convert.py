"""Building request messages and reading response messages for the client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from vigil.clients.types import (
    FeedbackReceipt,
    ModelInfo,
    ModelSummary,
    Prediction,
    Rollout,
    RolloutGuard,
    RolloutInfo,
    RolloutPromotion,
    TensorInfo,
    VersionInfo,
)
from vigil.protos.tensors import dtype_name, from_array, to_array
from vigil.protos.timing import SERVER_TIMING_KEY, parse_timing
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import rollout_pb2, tensor_pb2

Inputs = Mapping[str, npt.ArrayLike]


def predict_request(
    model: str, inputs: Inputs, *, version: int = 0, outputs: Sequence[str] = (), typed: bool = False,
    subject_id: str = "",
) -> pb.PredictRequest:
    return pb.PredictRequest(
        model_name=model,
        model_version=version,
        inputs=[from_array(name, np.asarray(value), typed=typed) for name, value in inputs.items()],
        output_names=list(outputs),
        subject_id=subject_id,
    )


def prediction(response: pb.PredictResponse, timing: Mapping[str, float] | None = None) -> Prediction:
    return Prediction(
        request_id=response.request_id,
        model_name=response.model_name,
        model_version=response.model_version,
        outputs={t.name: to_array(t) for t in response.outputs},
        labels=list(response.predicted_labels),
        probabilities=np.asarray(response.predicted_probabilities, dtype=np.float32),
        server_timing=dict(timing or {}),
    )


def timing_from_metadata(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, float]:
    """The server's per-stage timing from a call's trailing metadata (empty when it sent none)."""
    for key, value in metadata or ():
        if key == SERVER_TIMING_KEY:
            return parse_timing(value.decode() if isinstance(value, bytes) else value)
    return {}


def _tensor_info(spec: tensor_pb2.TensorSpec) -> TensorInfo:
    return TensorInfo(name=spec.name, dtype=dtype_name(spec.dtype), shape=tuple(spec.shape))


def model_info(message: pb.ModelMetadata) -> ModelInfo:
    return ModelInfo(
        name=message.name,
        version=message.version,
        versions=list(message.versions),
        inputs=[_tensor_info(s) for s in message.inputs],
        outputs=[_tensor_info(s) for s in message.outputs],
        max_batch_size=message.max_batch_size,
        execution_providers=list(message.execution_providers),
        labels=list(message.labels),
        probability_output=message.probability_output,
        state=pb.ModelState.Name(message.state),
        reason=message.reason,
    )


def model_summary(message: pb.ModelStatus) -> ModelSummary:
    return ModelSummary(
        name=message.name,
        default_version=message.default_version,
        reason=message.reason,
        versions=[
            VersionInfo(
                version=v.version,
                state=pb.ModelState.Name(v.state),
                reason=v.reason,
                execution_providers=list(v.execution_providers),
            )
            for v in message.versions
        ],
    )


def model_summaries(message: pb.ListModelsResponse) -> list[ModelSummary]:
    return [model_summary(m) for m in message.models]


def feedback_request(request_id: str, labels: Sequence[str] | str, subject_id: str = "") -> pb.FeedbackRequest:
    return pb.FeedbackRequest(request_id=request_id, labels=[labels] if isinstance(labels, str) else list(labels),
                              subject_id=subject_id)


def feedback_receipt(message: pb.FeedbackResponse) -> FeedbackReceipt:
    return FeedbackReceipt(message.request_id, message.model_name, message.model_version,
                           list(message.predicted_labels), message.replaced)


_MARGINS = ("max_error_ratio_increase", "max_p99_ratio", "max_accuracy_drop", "max_disagreement")


def rollout_message(rollout: Rollout) -> rollout_pb2.Rollout:
    message = rollout_pb2.Rollout(weights=rollout.weights, stable_version=rollout.stable_version,
                                  shadow_version=rollout.shadow_version, sticky_key=rollout.sticky_key)
    guard = rollout.guard
    if guard is not None:
        margins = {name: getattr(guard, name) for name in _MARGINS if getattr(guard, name) is not None}
        message.guard.CopyFrom(rollout_pb2.RolloutGuard(
            window_seconds=guard.window_seconds, for_seconds=guard.for_seconds, min_requests=guard.min_requests,
            min_labelled_rows=guard.min_labelled_rows, **margins))
    if rollout.promotion is not None:
        message.promotion.CopyFrom(rollout_pb2.RolloutPromotion(steps=rollout.promotion.steps,
                                                                hold_seconds=rollout.promotion.hold_seconds))
    return message


def rollout_info(message: rollout_pb2.RolloutStatus) -> RolloutInfo:
    rollout = None
    if message.HasField("rollout"):
        r = message.rollout
        guard = None
        if r.HasField("guard"):
            g = r.guard
            guard = RolloutGuard(window_seconds=g.window_seconds, for_seconds=g.for_seconds,
                                 min_requests=g.min_requests, min_labelled_rows=g.min_labelled_rows,
                                 **{name: getattr(g, name) for name in _MARGINS if g.HasField(name)})
        promotion = (RolloutPromotion(steps=list(r.promotion.steps), hold_seconds=r.promotion.hold_seconds)
                     if r.HasField("promotion") else None)
        rollout = Rollout(weights=dict(r.weights), stable_version=r.stable_version, shadow_version=r.shadow_version,
                          sticky_key=r.sticky_key, guard=guard, promotion=promotion)
    return RolloutInfo(model_name=message.model_name, rollout=rollout, phase=message.phase, reason=message.reason,
                       changed_unix_nanos=message.changed_unix_nanos, step=message.step)
