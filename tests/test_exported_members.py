"""Each package's public API is pinned: a change to `__all__` is a deliberate change to this list."""

from __future__ import annotations

import vigil
from vigil import clients, server


def test_clients_exports() -> None:
    assert sorted(clients.__all__) == [
        "AsyncClient", "Cancelled", "Client", "DeadlineExceeded", "Erasure", "FeedbackReceipt", "InvalidInput",
        "LoadFailed",
        "MessageTooLarge",
        "ModelInfo",
        "ModelNotFound", "ModelSummary", "NotFound", "Overloaded", "PermissionDenied", "Prediction",
        "PredictionNotFound", "Rollout", "RolloutGuard", "RolloutInfo", "RolloutPromotion", "ServerError", "TLS",
        "TensorInfo",
        "Unauthenticated", "Unavailable", "Unimplemented", "VersionInfo", "VigilError",
    ]
    for name in clients.__all__:
        assert getattr(clients, name) is not None


def test_server_exports() -> None:
    assert sorted(server.__all__) == ["App", "Settings", "build_server", "serve"]


def test_the_vigil_namespace_exports_the_client() -> None:
    assert vigil.__all__ == clients.__all__
    assert vigil.Client is clients.Client and vigil.AsyncClient is clients.AsyncClient
