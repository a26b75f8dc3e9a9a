"""Server settings: one typed place, overridable by `VIGIL_`-prefixed environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent / "default_models"
"""The model repository shipped with Vigil: the breast-cancer classifier."""


class LimitSettings(BaseModel):
    """Size limits checked before a request is queued."""

    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest gRPC message the server receives or sends, in bytes."""
    max_rows_per_request: int = Field(65536, ge=1)
    """Most rows (batch-dimension entries) one Predict request, or one BatchPredict item, may carry."""
    max_batch_items: int = Field(1024, ge=1)
    """Most items one BatchPredict call may carry."""
    max_tensor_elements: int = Field(16 * 1024 * 1024, ge=1)
    """Most elements one input tensor may hold."""


class TelemetrySettings(BaseModel):
    """Metrics, traces and logs. Endpoints, service name and sampling come from the standard OTEL_* variables."""

    enabled: bool = True
    """Record metrics and traces at all (off only to measure what telemetry costs)."""
    tracing: bool = True
    """Record traces; with it off, metrics are still recorded."""
    slow_request_seconds: float = Field(1.0, gt=0)
    """Calls slower than this are exported as traces even when the sampler did not pick them."""
    max_subscribers: int = Field(512, ge=1)
    """Telemetry stream subscribers at once (gRPC and the web dashboard together); more get RESOURCE_EXHAUSTED."""
    log_format: Literal["json", "text"] = "json"
    """JSON lines (with trace, span and request ids) or plain text."""


class Settings(BaseSettings):
    """Everything the server reads at start-up. Build once in `__main__` and pass it down.

    >>> Settings(grpc_port=0).grpc_port
    0
    """

    model_config = SettingsConfigDict(env_prefix="VIGIL_", env_nested_delimiter="__", extra="forbid")

    host: str = "0.0.0.0"
    """Address the gRPC and HTTP servers listen on."""
    grpc_port: int = Field(8001, ge=0, le=65535)
    """gRPC port; 0 picks a free one (the chosen port is logged)."""
    http_port: int = Field(8002, ge=0, le=65535)
    """HTTP port for /metrics and health; 0 picks a free one."""
    models_dir: Path = DEFAULT_MODELS_DIR
    """Model repository: a folder per model, numbered version folders each holding model.onnx."""
    log_level: str = "INFO"
    """Level of the server's log (DEBUG, INFO, WARNING, ERROR)."""
    strict_readiness: bool = False
    """Report the server NOT_SERVING while any model failed to load (otherwise only that model is)."""
    load_workers: int = Field(2, ge=1)
    """Threads that load and warm up models in parallel at start-up."""
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    """Seconds in-flight calls get to finish on shutdown."""
    limits: LimitSettings = LimitSettings()
    """Request size limits."""
    telemetry: TelemetrySettings = TelemetrySettings()
    """Metrics, traces and logs."""
