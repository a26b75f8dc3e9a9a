"""A model's inputs and outputs, read once from the ONNX Runtime session so validation never touches ORT."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

import numpy as np

from vigil.protos.tensors import NUMPY_DTYPES, DataType, dtype_name

ONNX_TYPES: Final[dict[str, int]] = {
    "tensor(bool)": DataType.BOOL,
    "tensor(uint8)": DataType.UINT8,
    "tensor(int8)": DataType.INT8,
    "tensor(uint16)": DataType.UINT16,
    "tensor(int16)": DataType.INT16,
    "tensor(uint32)": DataType.UINT32,
    "tensor(int32)": DataType.INT32,
    "tensor(uint64)": DataType.UINT64,
    "tensor(int64)": DataType.INT64,
    "tensor(float16)": DataType.FP16,
    "tensor(float)": DataType.FP32,
    "tensor(double)": DataType.FP64,
    "tensor(string)": DataType.STRING,
}
"""ONNX Runtime's type strings → wire dtypes."""


class UnsupportedSignature(ValueError):
    """The graph has an input or output Vigil cannot serve (a sequence, a map, an unknown element type)."""


@dataclass(frozen=True)
class TensorSpec:
    """One declared input or output: its name, wire dtype and shape (None marks a dynamic dimension)."""

    name: str
    dtype: int
    shape: tuple[int | None, ...]

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    @cached_property
    def numpy_dtype(self) -> np.dtype[np.generic] | None:
        """The numpy dtype its arrays decode to (None for a dtype the wire cannot carry)."""
        return NUMPY_DTYPES.get(self.dtype)

    @property
    def shape_text(self) -> str:
        """The shape as users read it, dynamic dimensions as -1: ``[-1, 30]``."""
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class Signature:
    """Every input and output of a model, in graph order.

    >>> sig = Signature.from_session(session)   # an onnxruntime.InferenceSession
    >>> sig.input_names
    ('features',)
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    @cached_property
    def input_set(self) -> frozenset[str]:
        return frozenset(self.input_names)

    def output(self, name: str) -> TensorSpec | None:
        return next((s for s in self.outputs if s.name == name), None)

    @classmethod
    def from_session(cls, session: Any) -> Signature:
        return cls(
            inputs=tuple(_spec(arg, "input") for arg in session.get_inputs()),
            outputs=tuple(_spec(arg, "output") for arg in session.get_outputs()),
        )


def _spec(arg: Any, role: str) -> TensorSpec:
    dtype = ONNX_TYPES.get(arg.type)
    if dtype is None:
        raise UnsupportedSignature(f"{role} '{arg.name}' has type {arg.type}, which Vigil cannot serve")
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or []))
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)
