"""The nested groups of the server's settings (`VIGIL_LIMITS__...`, `VIGIL_SECURITY__...` and so on); the alert
rules and SLOs are in `alerts`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


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
    max_pending_calls: int = Field(20_000, ge=100)
    """Calls gRPC may hold before the server takes them up. Beyond it gRPC cancels calls itself (CANCELLED, no
    reason); below it a burst reaches the model queues, which refuse the excess with RESOURCE_EXHAUSTED."""
    max_string_bytes: int = Field(1024 * 1024, ge=1)
    """Most bytes one element of a STRING (BYTES) input may hold."""


class SecuritySettings(BaseModel):
    """TLS, mutual TLS and bearer tokens for the gRPC and HTTP ports. Nothing set: plaintext and open."""

    model_config = ConfigDict(extra="forbid")

    tls_cert_file: Path | None = None
    """PEM server certificate (chain); with `tls_key_file`, both ports speak TLS."""
    tls_key_file: Path | None = None
    """PEM private key of the server certificate."""
    client_ca_file: Path | None = None
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS). Needs the server certificate."""
    tokens_file: Path | None = None
    """File of bearer tokens, one `identity: token` per line (`#` comments); callers send
    `authorization: Bearer <token>`. With tokens set, every call needs one (or a client certificate under mTLS)."""
    tokens: dict[str, SecretStr] = {}
    """Bearer tokens by identity, e.g. `VIGIL_SECURITY__TOKENS='{"dashboard": "..."}'`; merged with `tokens_file`."""
    open_services: list[str] = ["grpc.health.v1.Health"]
    """gRPC services callable without credentials (health for probes; add reflection for tooling)."""
    open_http_paths: list[str] = ["/healthz", "/readyz", "/metrics"]
    """HTTP paths served without a token (probes and the Prometheus scrape)."""
    admin_identities: list[str] = []
    """Identities allowed to load and unload models; empty: any authenticated caller."""

    @model_validator(mode="after")
    def _complete(self) -> SecuritySettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self


class AuditSettings(BaseModel):
    """The audit log: one JSON line per prediction and per feedback, in a file of its own."""

    model_config = ConfigDict(extra="forbid")

    file: Path | None = None
    """Where audit lines go; unset: no audit log."""
    max_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    """Size at which the file is rotated (renamed to `.1`, older ones shifted)."""
    backup_count: int = Field(10, ge=1)
    """Rotated files kept."""
    identity_hash_key: SecretStr | None = None
    """Secret for the keyed hash (HMAC-SHA256) of caller identities in audit lines. Unset: a random key per
    process, so hashes are comparable only within one run."""


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


class QualitySettings(BaseModel):
    """Prediction monitoring, ground-truth feedback and drift, for classifiers (models with a probability output)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Monitor predictions at all (needs telemetry enabled)."""
    interval_seconds: float = Field(0.5, gt=0, le=60)
    """How often finished batches are folded into the quality windows (off the request path)."""
    max_pending_batches: int = Field(4096, ge=1)
    """Finished batches waiting to be folded in; beyond it the oldest are skipped and counted."""
    accuracy_window_rows: int = Field(1000, ge=1)
    """Count window: accuracy and per-class metrics over the most recent labelled rows (by prediction time)."""
    accuracy_window_seconds: float = Field(3600.0, ge=300)
    """Time window: accuracy over the labelled rows predicted in this many seconds (whole five-minute buckets)."""
    expected_accuracy_rows: int = Field(1000, ge=1)
    """Most recent predictions the label-free accuracy estimate averages over."""
    drift_window_rows: int = Field(2000, ge=10)
    """Live rows kept per version for drift checks (the most recent)."""
    drift_window_seconds: float = Field(3600.0, gt=0)
    """Rows older than this leave the drift window."""
    drift_sample_ratio: float = Field(1.0, gt=0, le=1)
    """Fraction of rows sampled into the drift window."""
    drift_interval_seconds: float = Field(30.0, gt=0)
    """How often drift is computed."""
    drift_min_rows: int = Field(100, ge=1)
    """Fewest live rows a drift check needs."""
    psi_thresholds: tuple[float, float] = (0.1, 0.25)
    """PSI at or above these means possible drift, drift."""
    ks_pvalue_thresholds: tuple[float, float] = (0.05, 0.01)
    """KS p-values below these mean possible drift, drift."""
    chi2_pvalue_thresholds: tuple[float, float] = (0.05, 0.01)
    """Chi-square p-values (predicted-class mix) below these mean possible drift, drift."""
    subject_hash_key: SecretStr | None = None
    """Secret for the keyed hash (HMAC-SHA256) of subject ids sent with feedback. Unset: a random key per process,
    so hashes are comparable only within one run."""

    @model_validator(mode="after")
    def _ordered(self) -> QualitySettings:
        possible, drift = self.psi_thresholds
        if not 0 < possible <= drift:
            raise ValueError("psi_thresholds must be (possible, drift) with 0 < possible <= drift")
        for name in ("ks_pvalue_thresholds", "chi2_pvalue_thresholds"):
            possible, drift = getattr(self, name)
            if not 0 < drift <= possible < 1:
                raise ValueError(f"{name} must be (possible, drift) with 0 < drift <= possible < 1")
        return self


class StoreSettings(BaseModel):
    """The prediction log: where every classifier prediction and its outcome live, shared by every process that
    points at the same store."""

    model_config = ConfigDict(extra="forbid")

    url: SecretStr = SecretStr("sqlite:///vigil-data/vigil.db")
    """`sqlite:///PATH` (a file, created on first start; relative to the working folder, `sqlite:////abs/path`
    for an absolute one), `postgresql://USER@HOST:PORT/DB` (credentials may also come from libpq's `PGPASSWORD`,
    `PGPASSFILE` and friends), or `memory` (for tests only: everything is lost when the process ends). A secret:
    logs name the store without its password."""
    retention_days: float = Field(30.0, gt=0)
    """Predictions and outcomes older than this are purged, and feedback for them is refused."""
    max_queued: int = Field(100_000, ge=1)
    """Predictions waiting to be written; beyond it new ones are dropped and counted
    (`vigil_store_dropped_rows_total`)."""
    batch_size: int = Field(1000, ge=1)
    """Predictions written per transaction."""
    refresh_seconds: float = Field(5.0, gt=0, le=3600)
    """How often accuracy, coverage and delay are recomputed from the store (and soon after feedback)."""
    purge_interval_seconds: float = Field(3600.0, gt=0)
    """How often rows past the retention period are purged."""
    pool_size: int = Field(4, ge=1, le=64)
    """PostgreSQL connections per process."""
    connect_timeout_seconds: float = Field(10.0, gt=0)
    """How long opening the store may take at start before the server gives up with an error."""


class FleetSettings(BaseModel):
    """Every process that shares a store (workers on a host, replicas across hosts) is a member of one fleet: each
    publishes a summary of what it served through the store, and one member, the holder of a lease, evaluates alert
    rules and guards rollouts for all."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    """Publish this process's summary and read the fleet's; off: the process is a fleet of one."""
    tick_seconds: float = Field(1.0, gt=0, le=60)
    """How often each member publishes its summary and reads the others'."""
    stale_ticks: int = Field(3, ge=2, le=100)
    """A member silent for this many ticks has dropped out (its counts stay in the fleet's totals)."""
    lease_seconds: float = Field(3.0, gt=0, le=600)
    """How long the decision-maker's lease lasts unless renewed (it renews every tick); another member takes over
    within this plus one tick of the holder's death (with the defaults, within two alert evaluation intervals).
    At least two ticks, so that one slow renewal does not hand it over."""

    @model_validator(mode="after")
    def _lease_outlasts_ticks(self) -> FleetSettings:
        if self.lease_seconds < 2 * self.tick_seconds:
            raise ValueError(f"lease_seconds ({self.lease_seconds:g}) must be at least two ticks "
                             f"(tick_seconds {self.tick_seconds:g})")
        return self


class RolloutSettings(BaseModel):
    """Canary and A/B rollouts between model versions (each model's split is in its config.toml or set through
    SetRollout)."""

    model_config = ConfigDict(extra="forbid")

    interval_seconds: float = Field(1.0, gt=0, le=60)
    """How often every rollout's versions are compared, and guard and promotion decide."""
    max_shadow_in_flight: int = Field(256, ge=0)
    """Shadow copies running at once; more are skipped (and counted) rather than queued."""


class ReportSettings(BaseModel):
    """The operator report's history: per-minute aggregates of every process of the fleet, kept in the store (in
    memory only when the server has no store), summed at read."""

    model_config = ConfigDict(extra="forbid")

    retention_days: float = Field(7.0, gt=0, le=90)
    """How far back the report can look; older minutes are purged from the store. Each process takes about 0.1 KB
    of the store a minute, and 0.7 KB more for each model version with traffic in that minute (some 7 MB a week
    for a version busy around the clock)."""
    @model_validator(mode="before")
    @classmethod
    def _without_the_state_file(cls, data: Any) -> Any:
        """The history lives in the store now: settings of the state file it replaced are ignored, with a
        warning, rather than refusing to start a server configured for an earlier version."""
        if isinstance(data, dict):
            for gone in ("state_file", "save_interval_seconds"):
                if data.pop(gone, None) is not None:
                    warnings.warn(f"reports.{gone} is no longer used: the report history is kept in the store "
                                  "(VIGIL_STORE__URL)", FutureWarning, stacklevel=2)
        return data

    write_interval_seconds: float = Field(10.0, gt=0, le=60)
    """How often this process writes its minutes to the store (the minute still open included): a report served
    by another process of the fleet sees this one's calls that late at most."""
