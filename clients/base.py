"""What the blocking and the asyncio client share: defaults, the channel's message limits, and the base class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

from vigil.clients.types import ModelInfo

DEFAULT_TARGET = "127.0.0.1:8001"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

InputsLike = Mapping[str, npt.ArrayLike] | npt.ArrayLike
"""Inputs by name, or one array for a model with a single input."""

BatchItem = tuple[str, InputsLike]
"""(model name, inputs) for one BatchPredict item."""


def message_limits(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


class ClientBase:
    """What `Client` and `AsyncClient` share: the target, the default deadline and the input names learnt."""


    def __init__(self, target: str, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive or None, got {timeout}")
        self.target = target
        self.timeout = timeout
        self._input_names: dict[tuple[str, int], str] = {}

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _single_input(self, model: str, version: int, info: ModelInfo) -> str:
        if len(info.inputs) != 1:
            names = ", ".join(i.name for i in info.inputs)
            raise ValueError(f"model '{model}' takes several inputs ({names}); pass a dict of arrays")
        self._input_names[(model, version)] = info.inputs[0].name
        return info.inputs[0].name
