"""Vigil's Python client: `Client` and `AsyncClient` over the native gRPC API."""

from clients.client import AsyncClient, Client
from clients.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PermissionDenied,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    VigilError,
)
from clients.types import ModelInfo, ModelSummary, Prediction, TensorInfo, VersionInfo

__all__ = [
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "InvalidInput",
    "ModelInfo",
    "ModelNotFound",
    "ModelSummary",
    "Overloaded",
    "PermissionDenied",
    "Prediction",
    "ServerError",
    "TensorInfo",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VersionInfo",
    "VigilError",
]
