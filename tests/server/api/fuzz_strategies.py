"""Hypothesis strategies for the wire APIs: near-valid requests with mutations, malformed messages, raw garbage."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

from tests.onnx_models import IDENTITY_TYPES
from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.tensors import NUMPY_DTYPES, DataType, from_array, wire_dtype
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import tensor_pb2


@dataclass(frozen=True)
class Input:
    """One model input: `None` dimensions take any size; the first is the batch dimension when batching."""

    name: str
    dtype: int
    dims: tuple[int | None, ...]


@dataclass(frozen=True)
class Signature:
    """What a test model takes and gives, as tests/onnx_models.py builds it."""

    inputs: tuple[Input, ...]
    outputs: tuple[str, ...]


_FP32, _FP64, _INT64, _BOOL = DataType.FP32, DataType.FP64, DataType.INT64, DataType.BOOL

SIGNATURES: dict[str, Signature] = {
    "add": Signature((Input("a", _FP32, (None, 4)), Input("b", _FP32, (None, 4))), ("sum", "product")),
    "mixed": Signature((Input("ids", _INT64, (None, 3)), Input("weights", _FP64, (None, 3)),
                        Input("mask", _BOOL, (None, 3))), ("masked", "next_ids")),
    "sequence": Signature((Input("tokens", _FP32, (None, None, 8)),), ("mean",)),
    "fixed": Signature((Input("x", _FP32, (2, 2)),), ("y",)),
    "reshape": Signature((Input("x", _FP32, (None, None)),), ("y",)),
    "classifier": Signature((Input("features", _FP32, (None, 3)),), ("probabilities", "label")),
    "breast_cancer": Signature((Input("features", _FP32, (None, 30)),), ("label", "probabilities")),
    **{
        f"identity_{kind}": Signature(
            (Input("x", wire_dtype("float16" if kind == "fp16" else object if kind == "string" else kind),
                   (None, 2)),), ("y",))
        for kind in IDENTITY_TYPES
    },
}
"""The served test models (tests/conftest.py) that near-valid requests are built for."""

KNOWN_MODELS = sorted(SIGNATURES) + ["corrupt"]
"""Every model the fuzzed server serves except `slow`, whose runs are too slow for thousands of examples."""

LABELS = ["red", "green", "blue", "malignant", "benign", "0", "1"]

DATATYPE_NAMES = {
    DataType.BOOL: "BOOL", DataType.UINT8: "UINT8", DataType.INT8: "INT8", DataType.UINT16: "UINT16",
    DataType.INT16: "INT16", DataType.UINT32: "UINT32", DataType.INT32: "INT32", DataType.UINT64: "UINT64",
    DataType.INT64: "INT64", DataType.FP16: "FP16", DataType.FP32: "FP32", DataType.FP64: "FP64",
    DataType.STRING: "BYTES",
}
"""Wire dtype → Open Inference Protocol datatype name."""
DATATYPES = {name: wire for wire, name in DATATYPE_NAMES.items()}

CONTENTS_FIELD = {
    DataType.BOOL: "bool_contents", DataType.UINT8: "uint_contents", DataType.INT8: "int_contents",
    DataType.UINT16: "uint_contents", DataType.INT16: "int_contents", DataType.UINT32: "uint_contents",
    DataType.INT32: "int_contents", DataType.UINT64: "uint64_contents", DataType.INT64: "int64_contents",
    DataType.FP16: "fp32_contents", DataType.FP32: "fp32_contents", DataType.FP64: "fp64_contents",
    DataType.STRING: "bytes_contents",
}
"""The typed field each dtype uses; it holds values outside the range of INT8, UINT16, FP16 and others."""

MAX_RAW_BYTES = 5 * 1024 * 1024
"""Past the 4 MiB message limit the fuzzed server runs with, so RESOURCE_EXHAUSTED is reached too."""

_HUGE = [2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1]
_int64s = st.integers(-(2**63), 2**63 - 1)



def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    """Any integer of a field's range, often one just past a narrower dtype's range (which the field can hold)."""
    edges = [v for v in (-(2**31) - 1, -32769, -129, -1, 128, 256, 32768, 65536, 2**31, 2**32, 2**63, low, high)
             if low <= v <= high]
    return st.one_of(st.integers(low, high), st.sampled_from(edges))


_CONTENT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "bool_contents": st.booleans(),
    "int_contents": _ints(-(2**31), 2**31 - 1),
    "int64_contents": _ints(-(2**63), 2**63 - 1),
    "uint_contents": _ints(0, 2**32 - 1),
    "uint64_contents": _ints(0, 2**64 - 1),
    "fp32_contents": st.one_of(st.floats(width=32), st.sampled_from([65520.0, -1e30, 3.4e38])),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=12),
}

# --- names, versions, shapes ---------------------------------------------------------------------------------------

long_texts = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=3), st.integers(200, 40_000))

model_names = st.one_of(
    st.sampled_from(KNOWN_MODELS),
    st.sampled_from(["", " add", "ADD", "add\x00", "../add", "add/1", "identity_", "breast_cancer/1", "slow "]),
    st.text(max_size=24),
    long_texts,
)

versions = st.one_of(st.sampled_from([0, 1, 2, 3, -1]), _int64s)

version_texts = st.one_of(
    st.sampled_from(["", "1", "2", "3", "0", "-1", "01", "+1", " 1", "1.0", "²", "١", "9" * 30, "0x1"]),
    st.integers(0, 2**70).map(str),
    st.text(max_size=12),
)

input_names = st.one_of(
    st.sampled_from(["a", "b", "x", "features", "tokens", "ids", "weights", "mask", "", "A", "a "]),
    st.text(max_size=16),
    long_texts,
)

dtypes = st.one_of(st.sampled_from(list(DataType.values())), st.integers(-(2**31), 2**31 - 1))

datatype_names = st.one_of(
    st.sampled_from([*DATATYPE_NAMES.values(), "BF16", "FP8", "STRING", "fp32", "FP32 ", "", "INT128"]),
    st.text(max_size=10),
)

dims = st.one_of(st.integers(0, 6), st.integers(-3, -1), st.sampled_from([*_HUGE, -(2**63)]), _int64s)

shapes = st.one_of(
    st.lists(dims, max_size=6),
    st.lists(st.sampled_from([0, *_HUGE]), min_size=2, max_size=4),  # no elements, yet a huge size
    st.lists(st.sampled_from([0, 1]), min_size=30, max_size=80),  # more dimensions than numpy has
)


def element_count(shape: list[int]) -> int | None:
    """Elements a shape holds, or None for a negative dimension."""
    return None if any(d < 0 for d in shape) else math.prod(shape)


# --- tensors -------------------------------------------------------------------------------------------------------


def _filler(draw: st.DrawFn, length: int) -> bytes:
    """`length` bytes: drawn when short, a drawn pattern repeated when long (Hypothesis draws are small)."""
    if length <= 64:
        return draw(st.binary(min_size=length, max_size=length))
    pattern = draw(st.binary(min_size=1, max_size=8))
    return (pattern * (length // len(pattern) + 1))[:length]


def _contents(draw: st.DrawFn, target: Any, count: int | None, fields: list[str]) -> None:
    """Fill the typed `fields` of `target`, often with exactly `count` values (a short drawn run repeated)."""
    for field in fields:
        exact = count if count is not None and count <= 10_000 else 0
        size = draw(st.one_of(st.just(exact), st.integers(0, 6)))
        values = draw(st.lists(_CONTENT_VALUES[field], min_size=min(size, 6), max_size=min(size, 6)))
        if size > len(values):
            values = values * (size // len(values) + 1)
        getattr(target, field).extend(values[:size])


@st.composite
def garbage_tensors(draw: st.DrawFn) -> tensor_pb2.Tensor:
    """A tensor with any dtype number, shape, raw byte length and typed contents."""
    tensor = tensor_pb2.Tensor(name=draw(input_names), dtype=draw(dtypes), shape=draw(shapes))
    count = element_count(list(tensor.shape))
    np_dtype = NUMPY_DTYPES.get(tensor.dtype)
    itemsize = 4 if np_dtype is None or tensor.dtype == DataType.STRING else np_dtype.itemsize  # 4: empty strings
    exact = 0 if count is None else count * itemsize
    payload = draw(st.sampled_from(["none", "raw", "raw", "contents", "contents", "both"]))
    if payload in ("raw", "both"):
        length = draw(st.one_of(st.just(min(exact, MAX_RAW_BYTES)), st.integers(0, 64),
                                st.integers(0, MAX_RAW_BYTES)))
        tensor.raw_data = _filler(draw, length)
    if payload in ("contents", "both"):
        own = [CONTENTS_FIELD[tensor.dtype]] if tensor.dtype in CONTENTS_FIELD else []
        fields = draw(st.one_of(st.just(own), st.lists(st.sampled_from(sorted(_CONTENT_VALUES)), max_size=3,
                                                       unique=True)))
        tensor.contents.SetInParent()
        _contents(draw, tensor.contents, count, fields)
    return tensor


def _random_array(draw: st.DrawFn, dtype: int, shape: tuple[int, ...]) -> np.ndarray:
    """Any bit patterns (NaN, infinities, bools that are neither 0 nor 1) or tame values; strings may be bad UTF-8."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    count = math.prod(shape)
    if dtype == DataType.STRING:
        texts = draw(st.booleans())
        items = [rng.integers(97, 123, size=n, dtype=np.uint8).tobytes() if texts
                 else rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
                 for n in rng.integers(0, 9, size=count)]
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    np_dtype = NUMPY_DTYPES[dtype]
    if draw(st.booleans()):
        raw = rng.integers(0, 256, size=count * np_dtype.itemsize, dtype=np.uint8).tobytes()
        return np.frombuffer(raw, dtype=np_dtype).reshape(shape)
    if dtype == DataType.BOOL:
        return rng.random(shape) > 0.5
    return (rng.normal(size=shape) * 10).astype(np_dtype)


def _shape_for(draw: st.DrawFn, spec: Input, rows: int) -> tuple[int, ...]:
    if spec.dims[0] is None:
        return (rows, *(draw(st.integers(0, 7)) if d is None else d for d in spec.dims[1:]))
    return spec.dims  # type: ignore[return-value]


@st.composite
def valid_tensors(draw: st.DrawFn, model: str) -> list[tensor_pb2.Tensor]:
    """Well-formed inputs for `model`: the rows vary, including 0 and past the batch size and row limit."""
    signature = SIGNATURES[model]
    rows = draw(st.one_of(st.integers(1, 4), st.sampled_from([0, 8, 9, 16, 17, 1000, 1001])))
    typed = draw(st.booleans())
    tensors = []
    for spec in signature.inputs:
        shape = _shape_for(draw, spec, rows)
        tensors.append(from_array(spec.name, _random_array(draw, spec.dtype, shape), typed=typed))
    return tensors


_TENSOR_MUTATIONS = ["drop", "duplicate", "rename", "dtype", "dim", "add_dim", "remove_dim", "truncate", "extend",
                     "wrong_field", "values", "both", "extra"]


@st.composite
def mutated_tensors(draw: st.DrawFn, model: str) -> list[tensor_pb2.Tensor]:
    """Well-formed inputs for `model` with a few mutations: most requests are one mistake away from valid."""
    tensors = draw(valid_tensors(model))
    for mutation in draw(st.lists(st.sampled_from(_TENSOR_MUTATIONS), max_size=3)):
        if mutation == "extra" or not tensors:
            tensors.append(draw(garbage_tensors()))
            continue
        index = draw(st.integers(0, len(tensors) - 1))
        tensor = tensors[index]
        if mutation == "drop":
            del tensors[index]
        elif mutation == "duplicate":
            tensors.append(tensor_pb2.Tensor.FromString(tensor.SerializeToString()))
        elif mutation == "rename":
            tensor.name = draw(input_names)
        elif mutation == "dtype":
            tensor.dtype = draw(dtypes)
        elif mutation == "dim" and tensor.shape:
            tensor.shape[draw(st.integers(0, len(tensor.shape) - 1))] = draw(dims)
        elif mutation == "add_dim":
            tensor.shape.insert(draw(st.integers(0, len(tensor.shape))), draw(dims))
        elif mutation == "remove_dim" and tensor.shape:
            del tensor.shape[draw(st.integers(0, len(tensor.shape) - 1))]
        elif mutation == "truncate":
            tensor.raw_data = tensor.raw_data[: draw(st.integers(0, len(tensor.raw_data)))]
        elif mutation == "extend":
            tensor.raw_data += draw(st.binary(min_size=1, max_size=16))
        elif mutation == "wrong_field":
            field = draw(st.sampled_from(sorted(_CONTENT_VALUES)))
            tensor.ClearField("raw_data")
            _contents(draw, tensor.contents, element_count(list(tensor.shape)), [field])
        elif mutation == "values" and tensor.dtype in CONTENTS_FIELD:  # the right field, any value it can hold
            field = CONTENTS_FIELD[tensor.dtype]
            tensor.ClearField("raw_data")
            tensor.contents.ClearField(field)
            _contents(draw, tensor.contents, element_count(list(tensor.shape)), [field])
        elif mutation == "both":
            tensor.raw_data = tensor.raw_data or b"\x00" * 4
            tensor.contents.fp32_contents.append(0.0)
    return tensors


def _output_names(model: str | None) -> st.SearchStrategy[list[str]]:
    known = list(SIGNATURES[model].outputs) if model in SIGNATURES else ["y", "sum"]
    return st.one_of(st.just([]), st.lists(st.one_of(st.sampled_from(known), st.text(max_size=8)), max_size=4))


# --- native requests -----------------------------------------------------------------------------------------------


@st.composite
def near_valid_predicts(draw: st.DrawFn) -> pb.PredictRequest:
    model = draw(st.sampled_from(sorted(SIGNATURES)))
    return pb.PredictRequest(
        model_name=model, model_version=draw(st.sampled_from([0, 0, 0, 1, 2, -1])),
        inputs=draw(st.one_of(valid_tensors(model), mutated_tensors(model))), output_names=draw(_output_names(model)))


@st.composite
def garbage_predicts(draw: st.DrawFn) -> pb.PredictRequest:
    name = draw(model_names)
    return pb.PredictRequest(model_name=name, model_version=draw(versions),
                             inputs=draw(st.lists(garbage_tensors(), max_size=4)),
                             output_names=draw(_output_names(name)))


predict_requests = st.one_of(near_valid_predicts(), near_valid_predicts(), garbage_predicts())

batch_predict_requests = st.one_of(
    st.builds(lambda items: pb.BatchPredictRequest(requests=items), st.lists(predict_requests, max_size=6)),
    st.builds(lambda item, n: pb.BatchPredictRequest(requests=[item] * n), predict_requests, st.integers(45, 60)),
)

request_ids = st.one_of(st.just(""), st.text(max_size=40), st.text("0123456789abcdef", min_size=32, max_size=32),
                        long_texts)

feedback_requests = st.builds(
    pb.FeedbackRequest, request_id=request_ids,
    labels=st.lists(st.one_of(st.sampled_from(LABELS), st.text(max_size=8)), max_size=5),
    subject_id=st.one_of(st.just(""), st.text(max_size=20), long_texts),
)

# --- Open Inference Protocol requests ------------------------------------------------------------------------------

_parameters = st.one_of(
    st.builds(lambda v: oip.InferParameter(bool_param=v), st.booleans()),
    st.builds(lambda v: oip.InferParameter(int64_param=v), _int64s),
    st.builds(lambda v: oip.InferParameter(string_param=v), st.text(max_size=12)),
    st.builds(lambda v: oip.InferParameter(double_param=v), st.floats()),
    st.builds(lambda v: oip.InferParameter(uint64_param=v), st.integers(0, 2**64 - 1)),
    st.just(oip.InferParameter()),
)
parameter_maps = st.dictionaries(st.one_of(st.sampled_from(["request_id", "binary_data", "priority", ""]),
                                           st.text(max_size=10)), _parameters, max_size=4)


def _set_parameters(target: Any, parameters: dict[str, oip.InferParameter]) -> None:
    for key, value in parameters.items():
        target[key].CopyFrom(value)


@st.composite
def infer_requests(draw: st.DrawFn) -> oip.ModelInferRequest:
    """A ModelInferRequest from the same near-valid and garbage tensors, in raw or typed form, with parameters."""
    native = draw(predict_requests)
    request = oip.ModelInferRequest(
        model_name=native.model_name, id=draw(st.one_of(st.just(""), st.text(max_size=16))),
        model_version=draw(st.one_of(st.just(str(native.model_version) if native.model_version else ""),
                                     version_texts)))
    _set_parameters(request.parameters, draw(parameter_maps))
    use_raw = any(t.raw_data for t in native.inputs) and draw(st.booleans())
    for tensor in native.inputs:
        datatype = DATATYPE_NAMES.get(tensor.dtype)
        if datatype is None or draw(st.integers(0, 9)) == 0:
            datatype = draw(datatype_names)
        item = request.inputs.add(name=tensor.name, shape=tensor.shape, datatype=datatype)
        _set_parameters(item.parameters, draw(parameter_maps))
        if tensor.HasField("contents") and (not use_raw or draw(st.integers(0, 9)) == 0):
            item.contents.ParseFromString(tensor.contents.SerializeToString())  # same field numbers
        if use_raw:
            request.raw_input_contents.append(tensor.raw_data)
    if request.raw_input_contents and draw(st.integers(0, 4)) == 0:
        request.raw_input_contents.append(draw(st.binary(max_size=8)))
    for name in native.output_names:
        _set_parameters(request.outputs.add(name=name).parameters, draw(parameter_maps))
    return request


# --- metadata requests ---------------------------------------------------------------------------------------------

metadata_requests = st.one_of(
    st.builds(pb.GetModelMetadataRequest, model_name=model_names, model_version=versions),
    st.builds(oip.ModelMetadataRequest, name=model_names, version=version_texts),
    st.builds(oip.ModelReadyRequest, name=model_names, version=version_texts),
    st.builds(oip.ModelStatisticsRequest, name=st.one_of(st.just(""), model_names), version=version_texts),
    st.builds(oip.RepositoryIndexRequest, repository_name=st.text(max_size=10), ready=st.booleans()),
    st.just(pb.ListModelsRequest()),
)

# --- raw bytes -----------------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= 2**64 - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


_field_numbers = st.one_of(st.integers(1, 8), st.integers(1, 2**29 - 1))
_leaf_fields = st.one_of(
    st.builds(lambda n, v: _field(n, 0, _varint(v)), _field_numbers, st.integers(0, 2**64 - 1)),
    st.builds(lambda n, v: _field(n, 1, v), _field_numbers, st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, v: _field(n, 5, v), _field_numbers, st.binary(min_size=4, max_size=4)),
    st.builds(lambda n, v: _field(n, 2, _varint(len(v)) + v), _field_numbers, st.binary(max_size=24)),
)
nested_garbage = st.recursive(
    _leaf_fields,
    lambda children: st.builds(
        lambda n, parts: _field(n, 2, _varint(len(b"".join(parts))) + b"".join(parts)),
        _field_numbers, st.lists(children, max_size=4)),
    max_leaves=24,
)
"""Well-formed protobuf wire data of random fields, nested: known field numbers parse as (odd) messages."""


@st.composite
def mutated_bytes(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """Serialized data with bytes flipped, cut, inserted or garbage fields appended."""
    data = bytearray(draw(base))
    for op in draw(st.lists(st.sampled_from(["flip", "cut", "insert", "append", "prepend"]), max_size=4)):
        position = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(position, len(data) - 1)] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[position:]
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif op == "append":
            data += draw(nested_garbage)
        elif op == "prepend":
            data[0:0] = draw(nested_garbage)
    return bytes(data)


def raw_bodies(message: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Bytes for a method taking `message`: random, nested garbage, or a serialized request mangled."""
    serialized = message.map(lambda m: m.SerializeToString())
    return st.one_of(st.binary(max_size=512), st.lists(nested_garbage, max_size=4).map(b"".join),
                     mutated_bytes(serialized))
