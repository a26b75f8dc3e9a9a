"""Alert settings: the rules the server evaluates (threshold, anomaly and trend), the SLOs they may watch, and the
shipped defaults; `vigil.server.settings.settings.Settings` holds them as its `alerts` group."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

Signal = Literal["error_ratio", "latency", "queue_depth", "model_ready", "drift_status", "drift_score", "accuracy",
                 "expected_accuracy", "label_coverage", "error_budget_burn", "rollout_rolled_back",
                 "store_dropped_rows"]
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
          "{model} v{version}: p99 latency {value} over 5 minutes", quantile="0.99", window="5m"),
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
          "{model}: the availability error budget burns {value} too fast", slo="availability", windows="1h,5m"),
    _rule("VigilErrorBudgetSlowBurn", "error_budget_burn", ">", 6, 15, "warning",
          "{model}: the availability error budget burns {value} too fast", slo="availability", windows="6h,30m"),
    _rule("VigilModelNotReady", "model_ready", "==", 0, 5, "warning", "{model} v{version} is not serving"),
    _rule("VigilCanaryRolledBack", "rollout_rolled_back", ">", 0, 0, "warning",
          "{model} v{version} was rolled back by its rollout's guard"),
    _rule("VigilStoreDroppingPredictions", "store_dropped_rows", ">", 0, 0, "critical",
          "{value} prediction(s) could not be logged to the store in 5 minutes", window="5m"),
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
