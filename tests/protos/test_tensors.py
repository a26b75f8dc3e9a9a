"""The shared numpy ↔ Tensor codec."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.protos.tensors import NUMPY_DTYPES, DataType, TensorError, from_array, to_array, wire_dtype
from vigil.protos.timing import format_timing, parse_timing
from vigil.protos.vigil.v1 import tensor_pb2


@pytest.mark.parametrize("dtype", [d for d in NUMPY_DTYPES if d != DataType.STRING], ids=DataType.Name)
@pytest.mark.parametrize("typed", [False, True])
def test_round_trip_every_numeric_dtype(dtype: int, typed: bool) -> None:
    np_dtype = NUMPY_DTYPES[dtype]
    array = (np.arange(12).reshape(3, 4) % 2).astype(np_dtype)
    tensor = from_array("x", array, typed=typed)
    assert tensor.dtype == dtype and list(tensor.shape) == [3, 4]
    assert bool(tensor.raw_data) != typed
    back = to_array(tensor)
    assert back.dtype == np_dtype
    np.testing.assert_array_equal(back, array)


def test_raw_bytes_are_little_endian_whatever_the_input_byte_order() -> None:
    big_endian = np.array([1, 256], dtype=">i4")
    tensor = from_array("x", big_endian)
    assert tensor.raw_data == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    np.testing.assert_array_equal(to_array(tensor), [1, 256])


def test_strings_raw_and_typed() -> None:
    array = np.array([b"a", b"", "é".encode()], dtype=object)
    raw = from_array("s", array)
    assert raw.raw_data == b"\x01\x00\x00\x00a\x00\x00\x00\x00\x02\x00\x00\x00\xc3\xa9"
    assert to_array(raw).tolist() == array.tolist()
    assert to_array(from_array("s", array, typed=True)).tolist() == array.tolist()
    assert to_array(from_array("s", np.array(["text"]))).tolist() == [b"text"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"\x05\x00\x00\x00ab", "past the end"), (b"\x01\x00", "inside a string length"),
     (b"\x01\x00\x00\x00a", "holds 1 strings but the shape needs 2")],
)
def test_malformed_string_bytes(raw: bytes, message: str) -> None:
    with pytest.raises(TensorError, match=message):
        to_array(tensor_pb2.Tensor(name="s", dtype=DataType.STRING, shape=[2], raw_data=raw))


def test_scalar_and_empty_tensors() -> None:
    assert to_array(from_array("x", np.float32(2.5))).shape == ()
    assert to_array(from_array("x", np.zeros((0, 3), np.float32))).shape == (0, 3)


def test_wire_dtype_rejects_what_the_wire_cannot_carry() -> None:
    with pytest.raises(TensorError, match="complex"):
        wire_dtype(np.complex64)


def test_timing_round_trip() -> None:
    text = format_timing({"queue": 0.000125, "compute": 0.5}, batch_size=8)
    assert text == "queue;dur=0.000125, compute;dur=0.500000, batch;size=8"
    assert parse_timing(text) == {"queue": 0.000125, "compute": 0.5, "batch_size": 8.0}
    assert parse_timing("junk, x;dur=oops") == {}
