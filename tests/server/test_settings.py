"""Settings: one typed place, VIGIL_* environment overrides, nested groups with `__`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.settings import DEFAULT_MODELS_DIR, Settings


def test_defaults_serve_the_bundled_model() -> None:
    settings = Settings()
    assert settings.grpc_port == 8001 and settings.http_port == 8002
    assert settings.models_dir == DEFAULT_MODELS_DIR
    assert (DEFAULT_MODELS_DIR / "breast_cancer" / "1" / "model.onnx").is_file()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_GRPC_PORT", "9001")
    monkeypatch.setenv("VIGIL_LIMITS__MAX_ROWS_PER_REQUEST", "12")
    settings = Settings()
    assert settings.grpc_port == 9001 and settings.limits.max_rows_per_request == 12
    assert Settings(grpc_port=0).grpc_port == 0  # arguments beat the environment


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="grpc_port"):
        Settings(grpc_port=70000)
    with pytest.raises(ValidationError, match="unknown_option"):
        Settings(unknown_option=1)  # type: ignore[call-arg]
    monkeypatch.setenv("VIGIL_HTTP_PORT", "eighty")
    with pytest.raises(ValidationError, match="http_port"):
        Settings()
