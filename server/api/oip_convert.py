"""Open Inference Protocol (KServe v2) protobuf ↔ domain conversion; protobuf stops here."""

from __future__ import annotations

from typing import Final

from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.tensors import DataType, encode
from vigil.server.api.native_convert import add_input
from vigil.server.batching.records import Arrays
from vigil.server.batching.statistics import Duration
from vigil.server.errors import InvalidInput, quoted
from vigil.server.inference.feedback import check_subject
from vigil.server.inference.requests import MAX_REQUEST_ID_CHARACTERS, InferRequest, InferResult
from vigil.server.models.repository import Model, ModelVersion, VersionState
from vigil.server.models.signature import TensorSpec

DATATYPES: Final[dict[str, int]] = {
    "BOOL": DataType.BOOL, "UINT8": DataType.UINT8, "UINT16": DataType.UINT16, "UINT32": DataType.UINT32,
    "UINT64": DataType.UINT64, "INT8": DataType.INT8, "INT16": DataType.INT16, "INT32": DataType.INT32,
    "INT64": DataType.INT64, "FP16": DataType.FP16, "FP32": DataType.FP32, "FP64": DataType.FP64,
    "BYTES": DataType.STRING,
}
"""The protocol's datatype names → Vigil's wire dtypes (BF16 has no numpy type and is not served)."""
DATATYPE_NAMES: Final[dict[int, str]] = {wire: name for name, wire in DATATYPES.items()}

PLATFORM = "onnxruntime_onnx"
"""Platform name clients of the protocol know ONNX Runtime models by."""


def client_id(text: str) -> str:
    """A request's own `id`, checked: at most MAX_REQUEST_ID_CHARACTERS printable ASCII characters, no spaces. It
    is echoed in the response and may name the prediction in Feedback, but the server keys everything by its own
    request id, and never logs this one."""
    if len(text) > MAX_REQUEST_ID_CHARACTERS or not all("!" <= c <= "~" for c in text):
        raise InvalidInput(f"id must be at most {MAX_REQUEST_ID_CHARACTERS} printable ASCII characters without "
                           f"spaces (got {len(text)} characters)")
    return text


def subject_id(request: oip.ModelInferRequest) -> str:
    """The request's `subject_id` parameter (a string), checked; empty without one. Only its keyed hash is kept."""
    if "subject_id" not in request.parameters:
        return ""
    parameter = request.parameters["subject_id"]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise InvalidInput("the subject_id parameter must be a string")
    check_subject(parameter.string_param)
    return parameter.string_param


MAX_VERSION_DIGITS = 18
"""Versions are int64 in the native API; a longer string cannot name one (nor reach Python's int limit)."""


def version_number(text: str) -> int:
    """The protocol carries versions as strings; empty means the default version."""
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()):  # str.isdigit also takes "²", which int() refuses
        raise InvalidInput(f"model_version must be a number, got {quoted(text)}")
    if len(text) > MAX_VERSION_DIGITS:
        raise InvalidInput(f"model_version has {len(text)} digits; a version has at most {MAX_VERSION_DIGITS}")
    return int(text)


def to_request(message: oip.ModelInferRequest) -> InferRequest:
    """Decode a ModelInferRequest; raw_input_contents and typed contents are both accepted, parameters ignored."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries but there are {len(message.inputs)} inputs")
    inputs: Arrays = {}
    for index, tensor in enumerate(message.inputs):
        dtype = DATATYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidInput(f"input {quoted(tensor.name)}: datatype {quoted(tensor.datatype)} is not supported "
                               f"(supported: {', '.join(DATATYPES)})")
        has_contents = tensor.HasField("contents")
        if raw and has_contents:
            raise InvalidInput(f"input {quoted(tensor.name)}: contents is set but the request uses raw_input_contents")
        add_input(inputs, tensor.name, dtype, list(tensor.shape), raw[index] if raw else b"",
                  tensor.contents if has_contents else None)
    return InferRequest(
        model_name=message.model_name,
        model_version=version_number(message.model_version),
        inputs=inputs,
        output_names=tuple(o.name for o in message.outputs),
    )


def to_response(result: InferResult, request_id: str) -> oip.ModelInferResponse:
    """Outputs travel in raw_output_contents; `id` echoes the request's, and parameters carry Vigil's id."""
    response = oip.ModelInferResponse(
        model_name=result.model_name, model_version=str(result.model_version), id=request_id,
    )
    response.parameters["request_id"].string_param = result.request_id
    for name, array in result.outputs.items():
        dtype, data = encode(array)
        response.outputs.add(name=name, datatype=DATATYPE_NAMES[dtype], shape=array.shape)
        response.raw_output_contents.append(data)
    return response


def _tensor(spec: TensorSpec) -> oip.ModelMetadataResponse.TensorMetadata:
    return oip.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=DATATYPE_NAMES[spec.dtype], shape=[-1 if d is None else d for d in spec.shape],
    )


def to_model_metadata(model: Model, version: ModelVersion) -> oip.ModelMetadataResponse:
    signature = version.signature
    return oip.ModelMetadataResponse(
        name=model.name,
        versions=[str(v) for v in sorted(model.versions)],
        platform=PLATFORM,
        inputs=[_tensor(s) for s in signature.inputs],
        outputs=[_tensor(s) for s in signature.outputs],
    )


_INDEX_STATES = {
    VersionState.LOADING: "LOADING", VersionState.READY: "READY",
    VersionState.FAILED: "UNAVAILABLE", VersionState.UNLOADED: "UNLOADED",
}


def to_repository_index(models: list[Model], *, ready_only: bool) -> oip.RepositoryIndexResponse:
    response = oip.RepositoryIndexResponse()
    for model in models:
        if not model.versions and not ready_only:
            response.models.add(name=model.name, state="UNAVAILABLE", reason=model.reason)
        for version in sorted(model.versions.values(), key=lambda v: v.version):
            if ready_only and not version.is_ready:
                continue
            response.models.add(name=model.name, version=str(version.version),
                                state=_INDEX_STATES[version.state], reason=version.reason)
    return response


def _duration(d: Duration) -> oip.StatisticDuration:
    return oip.StatisticDuration(count=d.count, ns=d.ns)


def to_model_statistics(version: ModelVersion) -> oip.ModelStatistics:
    requests = version.requests
    batches = version.batcher.statistics if version.batcher else None
    stats = oip.ModelStatistics(
        name=version.name, version=str(version.version), last_inference=requests.last_inference_ms,
        inference_count=batches.inferences if batches else 0,
        execution_count=batches.executions if batches else 0,
    )
    inference = stats.inference_stats
    inference.success.CopyFrom(_duration(requests.success))
    inference.fail.CopyFrom(_duration(requests.fail))
    if batches:
        inference.queue.CopyFrom(_duration(batches.queue))
        inference.compute_infer.CopyFrom(_duration(batches.compute))
        for size in sorted(batches.compute_by_batch_size):
            stats.batch_stats.add(batch_size=size, compute_infer=_duration(batches.compute_by_batch_size[size]))
    return stats
