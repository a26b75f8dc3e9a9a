"""Protobuf ↔ domain conversion for the native API; protobuf stops here."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.protos.tensors import TensorError, decode, from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import tensor_pb2
from vigil.server.batching.records import Arrays
from vigil.server.errors import InvalidInput, ServerError, quoted, status_for
from vigil.server.inference.feedback import FeedbackResult, check_subject
from vigil.server.inference.requests import InferRequest, InferResult
from vigil.server.models.repository import Model, ModelVersion, VersionState
from vigil.server.models.signature import TensorSpec
from vigil.telemetry.calls.context import CallItem


def to_request(message: pb.PredictRequest) -> InferRequest:
    """Decode a PredictRequest; raises InvalidInput naming the input whose tensor is malformed."""
    inputs: Arrays = {}
    for tensor in message.inputs:
        contents = tensor.contents if tensor.HasField("contents") else None
        add_input(inputs, tensor.name, tensor.dtype, list(tensor.shape), tensor.raw_data, contents)
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        inputs=inputs,
        output_names=tuple(message.output_names),
    )


def add_input(inputs: Arrays, name: str, dtype: int, shape: list[int], raw: bytes, contents: Any | None) -> None:
    """Decode one input into `inputs`; raises InvalidInput naming it. Shared by both protocols."""
    if not name:
        raise InvalidInput("an input tensor has no name")
    if name in inputs:
        raise InvalidInput(f"input {quoted(name)} is given more than once")
    try:
        array = decode(dtype, shape, raw, contents)
    except TensorError as exc:
        raise InvalidInput(f"input {quoted(name)}: {exc}") from None
    inputs[name] = _decode_text(name, array) if array.dtype == object else array


def to_request_or_error(message: pb.PredictRequest) -> InferRequest | ServerError:
    """Decode one BatchPredict item; a bad item becomes its error instead of failing the call."""
    try:
        if message.subject_id:
            check_subject(message.subject_id)
        return to_request(message)
    except ServerError as exc:
        return exc


def item_status(error: ServerError) -> pb.ItemStatus:
    """A batch item's status for the error it met."""
    code, message = status_for(error)
    return pb.ItemStatus(code=code.value[0], message=message)


def to_batch_response(outcomes: list[InferResult | ServerError]) -> pb.BatchPredictResponse:
    """One result per item, in order: the response, or the status its error maps to."""
    return pb.BatchPredictResponse(results=[
        pb.BatchPredictResult(status=item_status(o)) if isinstance(o, ServerError)
        else pb.BatchPredictResult(status=pb.ItemStatus(code=0), response=to_response(o)) for o in outcomes])


def call_item(request: pb.PredictRequest, outcome: InferResult | ServerError) -> CallItem:
    """What the audit log keeps of one BatchPredict item: never its tensors."""
    if isinstance(outcome, ServerError):
        return CallItem("", request.model_name, str(request.model_version or ""), outcome)
    return CallItem(outcome.request_id, outcome.model_name, str(outcome.model_version))


def to_feedback_response(result: FeedbackResult) -> pb.FeedbackResponse:
    return pb.FeedbackResponse(request_id=result.request_id, model_name=result.model,
                               model_version=int(result.version), predicted_labels=result.predicted,
                               replaced=result.replaced)


def _decode_text(name: str, array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """STRING elements as text: ONNX Runtime takes str, and would turn bytes into their repr."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat.tolist()):
        try:
            out[i] = item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input {quoted(name)}: string element {i} is not valid UTF-8") from None
    return out.reshape(array.shape)


def to_response(result: InferResult) -> pb.PredictResponse:
    """Encode an InferResult; outputs travel as raw little-endian bytes."""
    response = pb.PredictResponse(
        request_id=result.request_id,
        model_name=result.model_name,
        model_version=result.model_version,
        outputs=[from_array(name, array) for name, array in result.outputs.items()],
    )
    if result.classification is not None:
        response.predicted_labels.extend(result.classification.labels)
        response.predicted_probabilities.extend(result.classification.probabilities.tolist())
    return response


_STATES = {
    VersionState.LOADING: pb.LOADING,
    VersionState.READY: pb.READY,
    VersionState.FAILED: pb.FAILED,
    VersionState.UNLOADED: pb.UNLOADED,
}


def _spec(spec: TensorSpec) -> tensor_pb2.TensorSpec:
    return tensor_pb2.TensorSpec(name=spec.name, dtype=spec.dtype, shape=  # type: ignore[arg-type]
        [-1 if d is None else d for d in spec.shape])


def to_model_status(model: Model) -> pb.ModelStatus:
    default = model.default_version
    return pb.ModelStatus(
        name=model.name,
        default_version=default.version if default else 0,
        reason=model.reason,
        versions=[
            pb.VersionStatus(
                version=v.version, state=_STATES[v.state], reason=v.reason, execution_providers=v.providers
            )
            for v in sorted(model.versions.values(), key=lambda v: v.version)
        ],
    )


def to_model_metadata(model: Model, version: ModelVersion) -> pb.ModelMetadata:
    config = version.config
    signature = version.session.signature if version.session else None
    return pb.ModelMetadata(
        name=model.name,
        version=version.version,
        versions=sorted(model.versions),
        platform="onnxruntime",
        inputs=[_spec(s) for s in signature.inputs] if signature else [],
        outputs=[_spec(s) for s in signature.outputs] if signature else [],
        max_batch_size=config.max_batch_size,
        execution_providers=version.providers,
        labels=config.labels,
        probability_output=config.probability_output or "",
        state=_STATES[version.state],
        reason=version.reason,
        load_seconds=version.load_seconds,
    )
