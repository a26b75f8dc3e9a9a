"""Vigil's Python client: `Client` and `AsyncClient` over the native gRPC API."""

from clients.channel import TLS
from clients.client import AsyncClient, Client
from clients.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    LoadFailed,
    ModelNotFound,
    NotFound,
    Overloaded,
    PermissionDenied,
    PredictionNotFound,
    ServerError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    VigilError,
)
from clients.types import FeedbackReceipt, ModelInfo, ModelSummary, Prediction, TensorInfo, VersionInfo

__all__ = [
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "FeedbackReceipt",
    "InvalidInput",
    "LoadFailed",
    "ModelInfo",
    "ModelNotFound",
    "ModelSummary",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "Prediction",
    "PredictionNotFound",
    "ServerError",
    "TLS",
    "TensorInfo",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VersionInfo",
    "VigilError",
]
