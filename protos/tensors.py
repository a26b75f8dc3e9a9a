"""Conversion between numpy arrays and `vigil.v1.Tensor` messages, shared by the server and the clients."""

from __future__ import annotations

import math
import struct
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from vigil.protos.vigil.v1 import tensor_pb2

DataType = tensor_pb2.DataType

NUMPY_DTYPES: Final[dict[int, np.dtype[np.generic]]] = {
    DataType.BOOL: np.dtype(np.bool_),
    DataType.UINT8: np.dtype("<u1"),
    DataType.INT8: np.dtype("<i1"),
    DataType.UINT16: np.dtype("<u2"),
    DataType.INT16: np.dtype("<i2"),
    DataType.UINT32: np.dtype("<u4"),
    DataType.INT32: np.dtype("<i4"),
    DataType.UINT64: np.dtype("<u8"),
    DataType.INT64: np.dtype("<i8"),
    DataType.FP16: np.dtype("<f2"),
    DataType.FP32: np.dtype("<f4"),
    DataType.FP64: np.dtype("<f8"),
    DataType.STRING: np.dtype(object),
}
"""Wire dtype → numpy dtype (explicitly little-endian, as the wire format is)."""

_CONTENTS_FIELD: Final[dict[int, str]] = {
    DataType.BOOL: "bool_contents",
    DataType.UINT8: "uint_contents",
    DataType.INT8: "int_contents",
    DataType.UINT16: "uint_contents",
    DataType.INT16: "int_contents",
    DataType.UINT32: "uint_contents",
    DataType.INT32: "int_contents",
    DataType.UINT64: "uint64_contents",
    DataType.INT64: "int64_contents",
    DataType.FP16: "fp32_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.STRING: "bytes_contents",
}
"""Wire dtype → the TensorContents field that carries it in typed form."""
_CONTENTS_FIELDS = frozenset(_CONTENTS_FIELD.values())

_LENGTH_PREFIX = struct.Struct("<I")

_STRING = int(DataType.STRING)
_WIRE_BY_NUMPY: Final[dict[np.dtype[np.generic], int]] = {
    np.dtype(d).newbyteorder(order): int(wire)
    for wire, d in NUMPY_DTYPES.items() if wire != DataType.STRING for order in ("<", ">", "=")
}
"""numpy dtype (either byte order) → wire dtype, for the dtypes the wire carries; strings are handled apart."""


class TensorError(ValueError):
    """A tensor message whose bytes, contents, dtype or shape do not agree; the message says how."""


def dtype_name(dtype: int) -> str:
    """The wire name of a dtype (e.g. ``FP32``), or a readable placeholder for unknown values."""
    try:
        return str(DataType.Name(dtype))
    except ValueError:
        return f"<unknown dtype {dtype}>"


def wire_dtype(dtype: npt.DTypeLike) -> int:
    """The wire dtype for a numpy dtype; raises TensorError when the wire format has no equivalent."""
    wire = _WIRE_BY_NUMPY.get(dtype)  # type: ignore[arg-type]
    if wire is not None:
        return wire
    np_dtype = np.dtype(dtype)
    wire = _WIRE_BY_NUMPY.get(np_dtype)
    if wire is not None:
        return wire
    if np_dtype.kind in ("U", "S", "O"):
        return _STRING
    raise TensorError(f"numpy dtype {np_dtype} has no Vigil wire dtype")


def _element_count(shape: list[int]) -> int:
    if shape and min(shape) < 0:
        raise TensorError(f"shape {shape} has a negative dimension")
    return math.prod(shape)


_NARROW_INTEGERS: Final[dict[int, tuple[int, int]]] = {
    DataType.INT8: (-(2**7), 2**7 - 1), DataType.UINT8: (0, 2**8 - 1),
    DataType.INT16: (-(2**15), 2**15 - 1), DataType.UINT16: (0, 2**16 - 1),
}
"""Integer dtypes that travel in a wider contents field, and the range each holds."""


def _narrow(values: Any, dtype: int, field: str) -> npt.NDArray[np.generic]:
    """Typed integers from a wider field; numpy would wrap an out-of-range value silently, so refuse it."""
    wide = np.asarray(values, dtype=np.int64)
    low, high = _NARROW_INTEGERS[dtype]
    if wide.size and (int(wide.min()) < low or int(wide.max()) > high):
        raise TensorError(f"contents.{field} holds a value outside {dtype_name(dtype)}'s range {low}..{high}")
    return wide.astype(NUMPY_DTYPES[dtype])


def _reshape(array: npt.NDArray[np.generic], shape: list[int]) -> npt.NDArray[np.generic]:
    try:
        return array.reshape(shape)
    except ValueError as exc:  # numpy's own bounds, which even an empty array meets: dimensions, total bytes
        raise TensorError(f"numpy cannot hold shape {shape}: {exc}") from None


def _decode_strings(raw: bytes, count: int) -> npt.NDArray[np.object_]:
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise TensorError("raw_data ends inside a string length prefix")
        (length,) = _LENGTH_PREFIX.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise TensorError(f"raw_data string {len(items)} claims {length} bytes past the end of the data")
        items.append(raw[offset : offset + length])
        offset += length
    if len(items) != count:
        raise TensorError(f"raw_data holds {len(items)} strings but the shape needs {count}")
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def decode(dtype: int, shape: list[int], raw: bytes, contents: Any | None) -> npt.NDArray[np.generic]:
    """Decode elements given as raw bytes or as typed contents (any message with TensorContents' fields,
    such as the Open Inference Protocol's InferTensorContents). Raises TensorError when they disagree."""
    np_dtype = NUMPY_DTYPES.get(dtype)
    if np_dtype is None:
        raise TensorError(f"dtype {dtype_name(dtype)} is not supported")
    count = _element_count(shape)
    if raw and contents is not None:
        raise TensorError("both raw_data and contents are set; send one")
    if contents is not None:
        field = _CONTENTS_FIELD[dtype]
        for other in _CONTENTS_FIELDS - {field}:
            if len(getattr(contents, other)):
                raise TensorError(f"contents.{other} is set but dtype {dtype_name(dtype)} uses {field}")
        values = getattr(contents, field)
        if len(values) != count:
            raise TensorError(f"contents.{field} holds {len(values)} elements but shape {shape} needs {count}")
        if dtype == _STRING:
            array = np.empty(count, dtype=object)
            array[:] = list(values)
        elif dtype in _NARROW_INTEGERS:
            array = _narrow(values, dtype, field)
        else:
            array = np.asarray(values, dtype=np_dtype)
        return _reshape(array, shape)
    if dtype == _STRING:
        return _reshape(_decode_strings(raw, count), shape)
    expected = count * np_dtype.itemsize
    if len(raw) != expected:
        raise TensorError(
            f"raw_data holds {len(raw)} bytes but shape {shape} of {dtype_name(dtype)} needs {expected}"
        )
    return _reshape(np.frombuffer(raw, dtype=np_dtype), shape)


def to_array(tensor: tensor_pb2.Tensor) -> npt.NDArray[np.generic]:
    """Decode a Tensor message into a numpy array of its shape; raises TensorError when it is inconsistent."""
    contents = tensor.contents if tensor.HasField("contents") else None
    return decode(tensor.dtype, list(tensor.shape), tensor.raw_data, contents)


def encode(array: npt.NDArray[np.generic]) -> tuple[int, bytes]:
    """The wire dtype and raw little-endian bytes of an array (strings length-prefixed)."""
    dtype = wire_dtype(array.dtype)
    return dtype, _raw_bytes(array, dtype)


def _raw_bytes(array: npt.NDArray[np.generic], dtype: int) -> bytes:
    if dtype == _STRING:
        return _encode_strings(array)
    wire = NUMPY_DTYPES[dtype]
    return (array if array.dtype == wire else array.astype(wire)).tobytes()


def _encode_strings(array: npt.NDArray[np.generic]) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(_LENGTH_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def from_array(name: str, array: npt.ArrayLike, *, typed: bool = False) -> tensor_pb2.Tensor:
    """Encode an array as a Tensor message: raw little-endian bytes, or typed contents when `typed`."""
    array = np.asarray(array)
    dtype = wire_dtype(array.dtype)
    if not typed:
        return tensor_pb2.Tensor(name=name, dtype=dtype, shape=array.shape,  # type: ignore[arg-type]
                                 raw_data=_raw_bytes(array, dtype))
    tensor = tensor_pb2.Tensor(name=name, dtype=dtype, shape=array.shape)  # type: ignore[arg-type]
    flat = array.reshape(-1)
    values: list[object] = (
        [v if isinstance(v, bytes) else str(v).encode() for v in flat] if dtype == _STRING else flat.tolist()
    )
    getattr(tensor.contents, _CONTENTS_FIELD[dtype]).extend(values)
    return tensor
