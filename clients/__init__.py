"""Vigil's Python client: `Client` and `AsyncClient` over the native gRPC API, their options and results as plain
values, errors mapped from gRPC status codes, and the `vigil` command line (`cli`). Imports only `vigil.protos`.
"""

from vigil.clients.async_client import AsyncClient
from vigil.clients.channel import TLS
from vigil.clients.client import Client
from vigil.clients.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    LoadFailed,
    MessageTooLarge,
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
from vigil.clients.types import (
    Erasure,
    FeedbackReceipt,
    ModelInfo,
    ModelSummary,
    Prediction,
    Rollout,
    RolloutGuard,
    RolloutInfo,
    RolloutPromotion,
    TensorInfo,
    VersionInfo,
)

__all__ = [
    "AsyncClient",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "Erasure",
    "FeedbackReceipt",
    "InvalidInput",
    "LoadFailed",
    "MessageTooLarge",
    "ModelInfo",
    "ModelNotFound",
    "ModelSummary",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "Prediction",
    "PredictionNotFound",
    "Rollout",
    "RolloutGuard",
    "RolloutInfo",
    "RolloutPromotion",
    "ServerError",
    "TLS",
    "TensorInfo",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VersionInfo",
    "VigilError",
]
