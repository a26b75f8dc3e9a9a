"""Checks of a decoded request against the model's Signature and the server's limits, before any queueing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protos.tensors import dtype_name, wire_dtype
from server.errors import InvalidInput
from server.sessions import Arrays
from server.signature import Signature, TensorSpec


@dataclass(frozen=True)
class Limits:
    """Request size limits (see LimitSettings)."""

    max_rows_per_request: int
    max_tensor_elements: int


def check_inputs(model: str, inputs: Arrays, signature: Signature, *, batching: bool, limits: Limits) -> int:
    """Raise InvalidInput for any missing, extra or ill-typed input; return the number of rows (1 if unbatched)."""
    expected = set(signature.input_names)
    missing = [n for n in signature.input_names if n not in inputs]
    if missing:
        raise InvalidInput(
            f"model '{model}' is missing input {', '.join(repr(n) for n in missing)}; "
            f"it takes {_describe(signature.inputs)}"
        )
    extra = [n for n in inputs if n not in expected]
    if extra:
        raise InvalidInput(
            f"model '{model}' has no input {', '.join(repr(n) for n in extra)}; "
            f"it takes {_describe(signature.inputs)}"
        )
    rows: int | None = None
    first_name = ""
    for spec in signature.inputs:
        array = inputs[spec.name]
        _check_tensor(spec, array, limits)
        if batching:
            if array.shape[0] == 0:
                raise InvalidInput(f"input '{spec.name}' has 0 rows; send at least one")
            if rows is None:
                rows, first_name = array.shape[0], spec.name
            elif array.shape[0] != rows:
                raise InvalidInput(
                    f"input '{spec.name}' has {array.shape[0]} rows but input '{first_name}' has {rows}; "
                    "every input needs the same number of rows"
                )
    rows = rows if rows is not None else 1
    if rows > limits.max_rows_per_request:
        raise InvalidInput(
            f"request has {rows} rows, over the limit max_rows_per_request={limits.max_rows_per_request}"
        )
    return rows


def check_outputs(model: str, requested: tuple[str, ...], signature: Signature) -> tuple[str, ...]:
    """The outputs to compute: the requested ones (checked to exist, deduplicated) or all of them."""
    if not requested:
        return signature.output_names
    known = set(signature.output_names)
    unknown = [n for n in requested if n not in known]
    if unknown:
        raise InvalidInput(
            f"model '{model}' has no output {', '.join(repr(n) for n in unknown)}; "
            f"its outputs are {', '.join(signature.output_names)}"
        )
    return tuple(dict.fromkeys(requested))


def _check_tensor(spec: TensorSpec, array: np.ndarray, limits: Limits) -> None:
    got = wire_dtype(array.dtype)
    if got != spec.dtype:
        raise InvalidInput(f"input '{spec.name}': expected dtype {spec.dtype_name}, got {dtype_name(got)}")
    if array.ndim != len(spec.shape) or any(
        want is not None and want != have for want, have in zip(spec.shape, array.shape, strict=False)
    ):
        raise InvalidInput(
            f"input '{spec.name}': expected shape {spec.shape_text}, got {list(array.shape)}"
        )
    if array.size > limits.max_tensor_elements:
        raise InvalidInput(
            f"input '{spec.name}' has {array.size} elements, over the limit "
            f"max_tensor_elements={limits.max_tensor_elements}"
        )


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"'{s.name}' {s.dtype_name} {s.shape_text}" for s in specs)
