"""Checks of a decoded request against the model's Signature and the server's limits, before any queueing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NoReturn

import numpy as np

from vigil.protos.tensors import DataType, dtype_name, wire_dtype
from vigil.server.batching.records import Arrays
from vigil.server.errors import InvalidInput, quoted
from vigil.server.models.signature import Signature, TensorSpec


@dataclass(frozen=True)
class Limits:
    """Request size limits (see LimitSettings)."""

    max_rows_per_request: int
    max_tensor_elements: int
    max_string_bytes: int


NonfinitePolicy = Literal["allow", "reject"]
"""What a model does with NaN or infinite floating-point inputs (ModelConfig.nonfinite_inputs)."""


def check_inputs(
    model: str, inputs: Arrays, signature: Signature, *, batching: bool, limits: Limits,
    nonfinite_inputs: NonfinitePolicy = "allow",
) -> int:
    """Raise InvalidInput for any missing, extra, ill-typed or oversized input, or one holding NaN or infinity
    when `nonfinite_inputs` is "reject"; return the number of rows (1 if unbatched)."""
    if inputs.keys() != signature.input_set:
        _refuse_names(model, inputs, signature)
    rows: int | None = None
    first_name = ""
    for spec in signature.inputs:
        array = inputs[spec.name]
        _check_tensor(spec, array, limits)
        if nonfinite_inputs == "reject":
            _check_finite(model, spec.name, array)
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


def _refuse_names(model: str, inputs: Arrays, signature: Signature) -> NoReturn:
    """Raise InvalidInput naming the inputs missing or not the model's."""
    missing = [n for n in signature.input_names if n not in inputs]
    if missing:
        raise InvalidInput(
            f"model '{model}' is missing input {', '.join(repr(n) for n in missing)}; "
            f"it takes {_describe(signature.inputs)}"
        )
    extra = [n for n in inputs if n not in signature.input_set]
    raise InvalidInput(
        f"model '{model}' has no input {_names(extra)}; "
        f"it takes {_describe(signature.inputs)}"
    )


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
    got = spec.dtype if array.dtype == spec.numpy_dtype else wire_dtype(array.dtype)
    if got != spec.dtype:
        raise InvalidInput(f"input '{spec.name}': expected dtype {spec.dtype_name}, got {dtype_name(got)}")
    shape = array.shape
    if len(shape) != len(spec.shape):
        _refuse_shape(spec, shape)
    for want, have in zip(spec.shape, shape, strict=True):
        if want is not None and want != have:
            _refuse_shape(spec, shape)
    if array.size > limits.max_tensor_elements:
        raise InvalidInput(
            f"input '{spec.name}' has {array.size} elements, over the limit "
            f"max_tensor_elements={limits.max_tensor_elements}"
        )
    if got == DataType.STRING:
        _check_string_bytes(spec.name, array, limits.max_string_bytes)


def _refuse_shape(spec: TensorSpec, shape: tuple[int, ...]) -> NoReturn:
    raise InvalidInput(f"input '{spec.name}': expected shape {spec.shape_text}, got {list(shape)}")


def _check_string_bytes(name: str, array: np.ndarray, limit: int) -> None:
    """Each element's UTF-8 size; elements short enough to fit whatever their characters are never encoded."""
    if array.dtype.kind in ("S", "U") and array.dtype.itemsize <= limit:  # fixed width bounds every element
        return
    items = array.reshape(-1).tolist()
    try:
        longest = max(map(len, items), default=0)
    except TypeError:  # not all str or bytes: each is measured below
        longest = limit
    if 4 * longest <= limit:  # UTF-8 takes at most 4 bytes a character
        return
    for index, item in enumerate(items):
        if isinstance(item, str) and 4 * len(item) <= limit:
            continue
        size = len(item) if isinstance(item, bytes) else len(str(item).encode())
        if size > limit:
            raise InvalidInput(
                f"input '{name}' element {index} has {size} bytes, over the limit max_string_bytes={limit}"
            )


def _check_finite(model: str, name: str, array: np.ndarray) -> None:
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    count = finite.size - int(np.count_nonzero(finite))
    raise InvalidInput(
        f"input '{name}' holds {count} NaN or infinite values; "
        f"model '{model}' refuses them (nonfinite_inputs = \"reject\")"
    )


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"'{s.name}' {s.dtype_name} {s.shape_text}" for s in specs)


def _names(names: list[str], shown: int = 5) -> str:
    """Input names a caller sent, quoted: the first few, then how many more."""
    text = ", ".join(quoted(n) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")
