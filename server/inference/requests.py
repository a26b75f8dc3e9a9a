"""The request and result values that travel the request path once protobuf is left behind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from vigil.server.batching.records import Arrays

MAX_REQUEST_ID_CHARACTERS = 128
"""The longest request id: the server's own are 32 hex digits; a client-chosen id (an Open Inference Protocol
request's `id`) may have up to this many characters."""


@dataclass(frozen=True)
class InferRequest:
    """One inference request, decoded: inputs as numpy arrays keyed by input name."""

    model_name: str
    model_version: int
    inputs: Arrays
    output_names: tuple[str, ...] = ()
    """Outputs the caller wants; empty means all."""


class Classification(NamedTuple):
    """Per-row top class of a classifier's probability output."""

    labels: list[str]
    probabilities: npt.NDArray[np.float32]


class InferResult(NamedTuple):
    """The answer to one InferRequest (a named tuple: one is built for every request)."""

    request_id: str
    model_name: str
    model_version: int
    outputs: Arrays
    classification: Classification | None = None
    timings: Mapping[str, float] = MappingProxyType({})
    """Seconds spent per stage (queue, compute), for server-timing metadata."""
    batch_size: int = 0
    """Rows in the ONNX Runtime run that computed this request."""
