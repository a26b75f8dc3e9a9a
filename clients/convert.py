"""Building request messages and reading response messages for the client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from clients.types import FeedbackReceipt, ModelInfo, ModelSummary, Prediction, TensorInfo, VersionInfo
from protos.tensors import dtype_name, from_array, to_array
from protos.timing import SERVER_TIMING_KEY, parse_timing
from protos.vigil.v1 import inference_pb2 as pb
from protos.vigil.v1 import tensor_pb2

Inputs = Mapping[str, npt.ArrayLike]


def predict_request(
    model: str, inputs: Inputs, *, version: int = 0, outputs: Sequence[str] = (), typed: bool = False
) -> pb.PredictRequest:
    return pb.PredictRequest(
        model_name=model,
        model_version=version,
        inputs=[from_array(name, np.asarray(value), typed=typed) for name, value in inputs.items()],
        output_names=list(outputs),
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
