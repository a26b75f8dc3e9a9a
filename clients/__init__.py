"""Vigil's Python client: `Client` and `AsyncClient` over the native gRPC API."""

from clients.client import AsyncClient, Client
from clients.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
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
    "ModelInfo",
    "ModelNotFound",
    "ModelSummary",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "Prediction",
    "PredictionNotFound",
    "ServerError",
    "TensorInfo",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VersionInfo",
    "VigilError",
]
