"""Server settings: one typed place, overridable by `VIGIL_`-prefixed environment variables."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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
    prediction_store_size: int = Field(100_000, ge=1)
    """Recent predictions kept for feedback to join; the oldest go first."""
    prediction_ttl_seconds: float = Field(86_400.0, gt=0)
    """Seconds a prediction can still receive feedback."""
    accuracy_window_rows: int = Field(1000, ge=1)
    """Count window: accuracy and per-class metrics over the most recent labelled rows."""
    accuracy_window_seconds: float = Field(3600.0, gt=0)
    """Time window: accuracy over labelled rows received in this many seconds."""
    max_labelled_rows: int = Field(100_000, ge=1)
    """Most labelled rows the time window holds."""
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


Signal = Literal["error_ratio", "latency", "queue_depth", "model_ready", "drift_status", "drift_score", "accuracy",
                 "expected_accuracy", "error_budget_burn", "rollout_rolled_back"]
"""What an alert rule can watch; `params` refine some (see `AlertRuleSettings.params`)."""


_DURATION = re.compile(r"\d+(\.\d+)?[smhd]")


def _duration(value: str) -> str:
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{value!r} is not a duration like 30s, 10m, 1h or 1d")
    return value


Duration = Annotated[str, AfterValidator(_duration)]
"""A duration such as "30s", "10m", "1h" or "1d"."""


class AnomalySettings(BaseModel):
    """An anomaly rule's band: the series' own recent values, centre ± k × spread, judged before the value joins.

    Values outside the band stay out of it (a sustained spike keeps firing); a band that took nothing in for a
    whole `window` is learnt again, so a lasting change of level becomes the new normal after about a window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["mad", "ewma"] = "mad"
    """mad: rolling median ± k × MAD (scaled by 1.4826 to estimate a standard deviation) over `window`; ewma: an
    EWMA control chart, EWMA mean ± k × EWMA standard deviation, smoothed by `alpha`."""
    k: float = Field(4.0, gt=0, allow_inf_nan=False)
    """Half-width of the band in standard deviations (4: with one evaluation every 5 s, 3 would fire about every
    half hour on perfectly normal noise)."""
    window: str | int = "10m"
    """History as a duration ("10m") or a number of evaluations (120): the values a mad band is built from, and
    for both methods how long a band may take nothing in before it is learnt again."""
    min_points: int = Field(20, ge=2)
    """Values the band needs before the rule can fire (no firing during this warm-up)."""
    direction: Literal["above", "below", "both"] = "both"
    """Which side of the band fires."""
    min_half_width: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Least half-width of the band, in the signal's unit (e.g. 0.01 s), for series that are nearly constant."""
    min_half_width_ratio: float = Field(0.1, ge=0, allow_inf_nan=False)
    """Least half-width of the band as a fraction of its centre."""
    alpha: float = Field(0.05, gt=0, le=1)
    """ewma only: the weight of each new value in the EWMA mean and variance."""

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | int) -> str | int:
        if isinstance(value, int):
            if value < 2:
                raise ValueError(f"a window of evaluations must hold at least 2, not {value}")
            return value
        return _duration(value)


class TrendSettings(BaseModel):
    """A trend rule's prediction: a least-squares line through the last `window` of values, extended `horizon`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration
    """The recent values the line is fitted to, e.g. "15m"."""
    horizon: Duration
    """How far ahead the line is read: the rule fires when `value op threshold` holds on it within this."""
    min_points: int = Field(10, ge=2)
    """Values the fit needs before the rule can fire."""


class AlertRuleSettings(BaseModel):
    """One alert rule, per model version: fires when its condition has held for `for_seconds`. The condition
    is `signal op threshold` (kind threshold), the signal leaving its own normal band (anomaly) or a line fitted
    to the signal reaching `op threshold` within a horizon (trend)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Alert name (the `alertname` label)."""
    signal: Signal
    """What to watch: error_ratio (failed / all calls over `window`), latency (the `quantile` of `stage` duration
    over `window`, seconds), queue_depth, model_ready (1 or 0), drift_status (worst of `test`: 0, 1 or 2),
    drift_score (highest PSI), accuracy (`window` = count or time), expected_accuracy, error_budget_burn (the
    `slo`'s burn rate: the lowest over `windows`, so every window must exceed the threshold)."""
    kind: Literal["threshold", "anomaly", "trend"] = "threshold"
    """threshold: `signal op threshold`; anomaly: the signal leaves its own band (`anomaly`, no threshold or op);
    trend: the fitted line meets `op threshold` (op <, <=, > or >=) within the horizon (`trend`)."""
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    threshold: float | None = None
    """Required for threshold and trend rules; anomaly rules take none."""
    for_seconds: float = Field(0.0, ge=0)
    """How long the condition must hold before the alert fires."""
    severity: Literal["critical", "warning", "info"] = "warning"
    labels: dict[str, str] = {}
    """Extra labels sent with the alert (e.g. team)."""
    summary: str = ""
    """One line for people; {model}, {version} and {value} are filled in, plus {threshold} (threshold and trend
    rules), {baseline}, {lower} and {upper} (anomaly: the band) and {current}, {predicted} and {eta} (trend: the
    observed value, the value at the horizon, which {value} also shows, and the time to the crossing)."""
    model: str | None = None
    """Only this model; unset watches every model."""
    params: dict[str, str] = {}
    """Signal parameters: window ("5m"), quantile ("0.99"), stage (request, queue, inference), test (psi, ks,
    chi2, any), slo (an SLO name), windows ("1h,5m")."""
    anomaly: AnomalySettings | None = None
    """The band of an anomaly rule; unset: the defaults."""
    trend: TrendSettings | None = None
    """The window and horizon of a trend rule (required for it)."""

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("threshold must be a finite number")
        return value

    @model_validator(mode="after")
    def _kind_fits(self) -> AlertRuleSettings:
        if self.kind != "anomaly" and self.threshold is None:
            raise ValueError(f"a {self.kind} rule needs a threshold")
        if self.kind == "anomaly":
            if self.threshold is not None:
                raise ValueError("an anomaly rule compares the signal with its own band and takes no threshold")
            if "op" in self.model_fields_set:
                raise ValueError("an anomaly rule takes no op: `anomaly.direction` says which side fires")
            anomaly = self.anomaly or AnomalySettings()
            if isinstance(anomaly.window, int) and anomaly.min_points > anomaly.window:
                raise ValueError(f"anomaly.min_points ({anomaly.min_points}) exceeds the {anomaly.window}-point "
                                 "window: the band could never be built")
        if self.kind == "trend":
            if self.trend is None:
                raise ValueError("a trend rule needs `trend` settings (window and horizon)")
            if self.op not in (">", ">=", "<", "<="):
                raise ValueError(f"a trend rule's op must be <, <=, > or >=, not {self.op}")
        for kind in ("anomaly", "trend"):
            if kind != self.kind and getattr(self, kind) is not None:
                raise ValueError(f"`{kind}` settings apply to kind = \"{kind}\" rules only, not {self.kind}")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _name_the_rule(cls, data: Any, handler: ModelWrapValidatorHandler[AlertRuleSettings]) -> AlertRuleSettings:
        """Errors start with the rule's name, so that a long list of rules points at the bad one."""
        try:
            return handler(data)
        except ValidationError as exc:
            name = data.get("name") if isinstance(data, dict) else None
            if not isinstance(name, str) or not name:
                raise
            problems = []
            for error in exc.errors():
                place = ".".join(str(part) for part in error["loc"])
                message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
                problems.append(f"{place}: {message}" if place else message)
            raise ValueError(f"alert rule {name}: {'; '.join(problems)}") from None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Only the fields the rule's kind uses, so a dump validates again; a threshold rule dumps as it did before
        rule kinds existed."""
        data: dict[str, Any] = handler(self)
        for key in _UNUSED_FIELDS[self.kind]:
            data.pop(key, None)
        return data


_UNUSED_FIELDS = {"threshold": ("kind", "anomaly", "trend"), "anomaly": ("op", "threshold", "trend"),
                  "trend": ("anomaly",)}


def _rule(name: str, signal: str, op: str, threshold: float, minutes: float, severity: str, summary: str,
          **params: str) -> AlertRuleSettings:
    return AlertRuleSettings.model_validate({
        "name": name, "signal": signal, "op": op, "threshold": threshold, "for_seconds": minutes * 60,
        "severity": severity, "summary": summary, "params": params})


DEFAULT_ALERT_RULES = (
    _rule("VigilHighErrorRatio", "error_ratio", ">", 0.05, 5, "critical",
          "{model} v{version}: error ratio {value} over 5 minutes", window="5m"),
    _rule("VigilHighLatencyP99", "latency", ">", 0.5, 5, "warning",
          "{model} v{version}: p99 latency {value} s over 5 minutes", quantile="0.99", window="5m"),
    _rule("VigilQueueBacklog", "queue_depth", ">", 500, 2, "warning", "{model} v{version}: {value} requests queued"),
    _rule("VigilInputDrift", "drift_status", ">=", 2, 10, "warning",
          "{model} v{version}: input features drift from the reference", test="psi"),
    _rule("VigilPredictionDrift", "drift_status", ">=", 2, 10, "warning",
          "{model} v{version}: the predicted-class mix drifts from the reference", test="chi2"),
    _rule("VigilLowAccuracy", "accuracy", "<", 0.9, 10, "critical",
          "{model} v{version}: accuracy {value} over the recent labelled rows", window="count"),
    _rule("VigilLowExpectedAccuracy", "expected_accuracy", "<", 0.9, 10, "warning",
          "{model} v{version}: expected accuracy {value} (label-free estimate)"),
    _rule("VigilErrorBudgetFastBurn", "error_budget_burn", ">", 14.4, 2, "critical",
          "{model}: the availability error budget burns {value}x too fast", slo="availability", windows="1h,5m"),
    _rule("VigilErrorBudgetSlowBurn", "error_budget_burn", ">", 6, 15, "warning",
          "{model}: the availability error budget burns {value}x too fast", slo="availability", windows="6h,30m"),
    _rule("VigilModelNotReady", "model_ready", "==", 0, 5, "warning", "{model} v{version} is not serving"),
    _rule("VigilCanaryRolledBack", "rollout_rolled_back", ">", 0, 0, "warning",
          "{model} v{version} was rolled back by its rollout's guard"),
)
"""Shipped rules; `deploy/prometheus/rules.yml` holds the same ones for Prometheus."""


class SLOSettings(BaseModel):
    """A service level objective per model: availability (calls not failed by the server) or latency (calls
    answered within `latency_seconds`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    kind: Literal["availability", "latency"]
    objective: float = Field(gt=0, lt=1)
    """Fraction of calls that must be good, e.g. 0.999."""
    latency_seconds: float | None = Field(None, gt=0)
    """For latency objectives: the bound a good call meets (one of the request-duration histogram's bounds)."""
    period_days: float = Field(30.0, gt=0, le=90)
    """The error budget's period."""

    @model_validator(mode="after")
    def _latency_bound(self) -> SLOSettings:
        if (self.kind == "latency") != (self.latency_seconds is not None):
            raise ValueError("latency_seconds is required for latency objectives and only for them")
        return self


DEFAULT_SLOS = (
    SLOSettings(name="availability", kind="availability", objective=0.999),
    SLOSettings(name="latency", kind="latency", objective=0.99, latency_seconds=0.25),
)


class AlertSettings(BaseModel):
    """Alert rules evaluated by the server, and where fired and resolved alerts go besides the log and stream."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    interval_seconds: float = Field(5.0, gt=0)
    """How often the rules are evaluated."""
    rules: list[AlertRuleSettings] = list(DEFAULT_ALERT_RULES)
    """The rules; the default set mirrors deploy/prometheus/rules.yml."""
    alertmanager_url: str | None = None
    """Alertmanager base URL (e.g. http://alertmanager:9093); alerts are posted to its v2 API."""
    resend_seconds: float = Field(60.0, gt=0)
    """Firing alerts are sent again this often, as Prometheus does."""
    slos: list[SLOSettings] = list(DEFAULT_SLOS)
    """Objectives whose error budget and burn rates are exported and usable in rules."""

    @model_validator(mode="after")
    def _unique(self) -> AlertSettings:
        for kind, names in (("alert rule", [r.name for r in self.rules]), ("SLO", [s.name for s in self.slos])):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(repeated)}")
        slos = {s.name for s in self.slos}
        for rule in self.rules:
            if rule.signal == "error_budget_burn" and rule.params.get("slo", "") not in slos:
                raise ValueError(f"alert rule {rule.name} watches SLO {rule.params.get('slo')!r}, which is not "
                                 f"defined (SLOs: {', '.join(sorted(slos)) or 'none'})")
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
    """The operator report's history: per-minute aggregates kept in memory, and optionally saved across restarts."""

    model_config = ConfigDict(extra="forbid")

    retention_days: float = Field(7.0, gt=0, le=90)
    """How far back the report can look; older minutes are dropped. Each model version with traffic in a minute
    takes about 1.3 KB of memory for it (some 13 MB a week for a version busy around the clock)."""
    state_file: Path | None = None
    """JSON file the history is saved to (atomically) and restored from at start; unset: the history starts afresh
    with each process. An unreadable file is logged and ignored."""
    save_interval_seconds: float = Field(60.0, ge=1)
    """How often the history is saved to `state_file` (and once more at shutdown)."""


CONFIG_FILE_VARIABLE = "VIGIL_CONFIG_FILE"
"""Environment variable naming a TOML file of settings (the same names as the fields; environment wins)."""


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
    alerts: AlertSettings = AlertSettings()
    """Alert rules, Alertmanager and SLOs."""
    reports: ReportSettings = ReportSettings()
    """The operator report's retained history."""
    rollouts: RolloutSettings = RolloutSettings()
    """Canary and A/B rollouts: how often they are judged, and how many shadow copies may run."""

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
