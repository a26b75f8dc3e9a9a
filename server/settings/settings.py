"""Server settings: one typed place, overridable by `VIGIL_`-prefixed environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from vigil.server.settings.alerts import AlertSettings
from vigil.server.settings.groups import (
    AuditSettings,
    FleetSettings,
    LimitSettings,
    QualitySettings,
    ReportSettings,
    RolloutSettings,
    SecuritySettings,
    StoreSettings,
    TelemetrySettings,
)

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models" / "default_models"
"""The model repository shipped with Vigil: the breast-cancer classifier."""


MAX_WORKERS = 64
"""The most worker processes one host runs."""

CONFIG_FILE_VARIABLE = "VIGIL_CONFIG_FILE"
"""Environment variable naming a TOML file of settings (the same names as the fields; environment wins)."""


class Settings(BaseSettings):
    """Everything the server reads at start-up. Build once in `__main__` and pass it down.

    >>> Settings(grpc_port=0).grpc_port
    0
    """

    model_config = SettingsConfigDict(env_prefix="VIGIL_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    """Address the gRPC and HTTP servers listen on: loopback unless told otherwise, since both ports are plaintext
    and open until TLS and tokens are set (the container image sets 0.0.0.0)."""
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
    workers: int | Literal["auto"] = 1
    """Worker processes serving the gRPC port together (`SO_REUSEPORT`), each with its own models, under one
    supervisor that restarts any that dies; `auto`: one per core of the host. See docs/scaling.md for sizing."""
    load_workers: int = Field(2, ge=1)
    """Threads that load and warm up models in parallel at start-up."""
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    """Seconds queued and in-flight calls get to finish on shutdown (a second signal exits at once)."""
    max_connection_age_seconds: float = Field(0.0, ge=0)
    """Close each client connection (gracefully: GOAWAY, its calls finish) after this long, so that clients that
    balance over DNS find replicas added since they connected; 0: connections live as long as clients keep them."""
    shutdown_refuse_seconds: float = Field(1.0, ge=0)
    """On shutdown, the least time new calls are answered UNAVAILABLE before the gRPC port closes (within the grace
    period): callers that send again at once hear UNAVAILABLE instead of having calls cut off as CANCELLED."""
    repository_poll_seconds: float = Field(0.0, ge=0)
    """Check the model repository folder for added, changed and removed models this often; 0: never."""
    limits: LimitSettings = LimitSettings()
    """Request size limits."""
    security: SecuritySettings = SecuritySettings()
    """TLS, mutual TLS and bearer tokens."""
    audit: AuditSettings = AuditSettings()
    """The audit log."""
    telemetry: TelemetrySettings = TelemetrySettings()
    """Metrics, traces and logs."""
    quality: QualitySettings = QualitySettings()
    """Prediction quality, feedback and drift."""
    store: StoreSettings = StoreSettings()
    """The prediction log (SQLite, PostgreSQL, or in memory for tests)."""
    alerts: AlertSettings = AlertSettings()
    """Alert rules, Alertmanager and SLOs."""
    reports: ReportSettings = ReportSettings()
    """The operator report's retained history."""
    rollouts: RolloutSettings = RolloutSettings()
    """Canary and A/B rollouts: how often they are judged, and how many shadow copies may run."""
    fleet: FleetSettings = FleetSettings()
    """The fleet every process sharing the store belongs to: its summaries, and its one decision-maker."""

    @field_validator("workers")
    @classmethod
    def _workers_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= MAX_WORKERS:
            raise ValueError(f"workers must be from 1 to {MAX_WORKERS}, or auto")
        return value

    @property
    def worker_count(self) -> int:
        """How many worker processes `workers` asks for on this host."""
        if self.workers == "auto":
            return min(len(os.sched_getaffinity(0)), MAX_WORKERS)
        return self.workers

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then `VIGIL_*` variables, then the TOML file `VIGIL_CONFIG_FILE` names, then defaults."""
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        path = os.environ.get(CONFIG_FILE_VARIABLE)
        if path:
            if not Path(path).is_file():
                raise ValueError(f"{CONFIG_FILE_VARIABLE}={path} names no readable file")
            sources += (TomlConfigSettingsSource(settings_cls, toml_file=path),)
        return sources
