"""Wiring of quality monitoring and alerting: builds them from settings, follows the repository's versions, and
starts and stops their schedules with the server."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.fleet.member import Fleet
from vigil.server.inference.outcomes import Outcomes
from vigil.server.models.repository import Model, ModelRepository
from vigil.server.settings import AlertRuleSettings, AlertSettings, AnomalySettings, QualitySettings, StoreSettings
from vigil.server.store.base import Store
from vigil.server.store.log import PredictionLog
from vigil.server.store.opening import open_store
from vigil.telemetry.alerts.alertmanager import AlertmanagerNotifier
from vigil.telemetry.alerts.detectors import Anomaly, Direction, Method, Trend
from vigil.telemetry.alerts.engine import AlertEngine, AlertTransition, TransitionKind
from vigil.telemetry.alerts.loop import AlertLoop
from vigil.telemetry.alerts.rules import AlertRule, format_apart, format_signal
from vigil.telemetry.alerts.slo import Objective, SLOTracker
from vigil.telemetry.alerts.watched_values import ServingState, SignalReader, parse_duration, rule_window
from vigil.telemetry.metrics.gauges import Readings, register_quality_gauges
from vigil.telemetry.metrics.instruments import Instruments
from vigil.telemetry.quality.drift_check import DriftThresholds
from vigil.telemetry.quality.monitor import QualityLimits, QualityMonitor
from vigil.telemetry.quality.readings import quality_readings
from vigil.telemetry.quality.reference_profile import PROFILE_FILE, ProfileError, load_profile
from vigil.telemetry.stream.frames import AlertSnapshot
from vigil.telemetry.stream.hub import TelemetryHub

logger = logging.getLogger(__name__)

Kind = telemetry_pb2.TelemetryEvent.Kind


def open_configured_store(store_settings: StoreSettings) -> Store:
    """The store the settings name, opened and migrated (StoreError says why it cannot be)."""
    store = open_store(store_settings.url.get_secret_value(), retention_days=store_settings.retention_days,
                       pool_size=store_settings.pool_size, connect_timeout=store_settings.connect_timeout_seconds)
    logger.info("store: %s (predictions and outcomes kept %g days)", store.name, store_settings.retention_days)
    return store


def build_outcomes(settings: QualitySettings, store_settings: StoreSettings, instruments: Instruments,
                   store: Store) -> Outcomes:
    """The quality monitor over the prediction log in `store`."""
    if settings.subject_hash_key is not None:
        key = settings.subject_hash_key.get_secret_value().encode("utf-8")
    else:
        key = store.secret("subject_hash_key", lambda: os.urandom(32))
        logger.warning("VIGIL_QUALITY__SUBJECT_HASH_KEY is not set: subject ids are hashed with a key kept in the "
                       "store, beside the hashes; set it to keep the key apart from the data")
    prediction_log = PredictionLog(store, max_queued=store_settings.max_queued, batch_size=store_settings.batch_size,
                                   on_dropped=lambda n: instruments.store_dropped.add((), n))
    instruments.store_dropped.add((), 0)  # exported from the start, so rate() and alerts see the first drop
    limits = QualityLimits(
        accuracy_rows=settings.accuracy_window_rows, accuracy_seconds=settings.accuracy_window_seconds,
        expected_rows=settings.expected_accuracy_rows,
        drift_rows=settings.drift_window_rows, drift_seconds=settings.drift_window_seconds,
        drift_sample_ratio=settings.drift_sample_ratio, drift_min_rows=settings.drift_min_rows,
        max_pending_batches=settings.max_pending_batches)
    thresholds = DriftThresholds(psi=settings.psi_thresholds, ks_pvalue=settings.ks_pvalue_thresholds,
                                 chi2_pvalue=settings.chi2_pvalue_thresholds)
    monitor = QualityMonitor(instruments, limits, thresholds, sink=prediction_log.log)
    return Outcomes(store, prediction_log, monitor, subject_key=key, count_rows=settings.accuracy_window_rows,
                    timed_seconds=settings.accuracy_window_seconds, refresh_seconds=store_settings.refresh_seconds,
                    purge_seconds=store_settings.purge_interval_seconds)


def alert_rules(settings: AlertSettings) -> list[AlertRule]:
    """The configured rules for the engine; ValueError names a rule with bad parameters."""
    rules = []
    for rule in settings.rules:
        try:
            rule_window(rule.signal, rule.params)
            detection = _detection(rule)
        except ValueError as exc:
            raise ValueError(f"alert rule {rule.name}: {exc}") from None
        rules.append(AlertRule(name=rule.name, signal=rule.signal, op=rule.op, threshold=rule.threshold,
                               for_seconds=rule.for_seconds, severity=rule.severity, labels=rule.labels,
                               summary=rule.summary, model=rule.model, params=rule.params, detection=detection))
        _warn_if_too_few_points(rule.name, detection, settings.interval_seconds)
    return rules


def _detection(rule: AlertRuleSettings) -> Anomaly | Trend | None:
    """An anomaly or trend rule's parameters for the engine, windows in seconds or points."""
    if rule.kind == "anomaly":
        band = rule.anomaly or AnomalySettings()
        seconds, points = (None, band.window) if isinstance(band.window, int) else (parse_duration(band.window), None)
        return Anomaly(method=Method(band.method), k=band.k, window_seconds=seconds, window_points=points,
                       min_points=band.min_points, direction=Direction(band.direction),
                       min_half_width=band.min_half_width, min_half_width_ratio=band.min_half_width_ratio,
                       alpha=band.alpha)
    if rule.kind == "trend":
        assert rule.trend is not None  # the settings require it
        return Trend(window_seconds=parse_duration(rule.trend.window),
                     horizon_seconds=parse_duration(rule.trend.horizon), min_points=rule.trend.min_points)
    return None


def _warn_if_too_few_points(name: str, detection: Anomaly | Trend | None, interval_seconds: float) -> None:
    """A time window that holds fewer evaluations than the rule needs points can never fire on the schedule (tests
    that evaluate by hand may still drive it, so this is a warning, not an error). An EWMA band keeps no window of
    values, so its warm-up does not depend on the window."""
    if detection is None or (isinstance(detection, Anomaly) and detection.method is Method.EWMA):
        return
    window = detection.window_seconds
    if window is None:
        return
    evaluations = int(window // interval_seconds)
    if evaluations < detection.min_points:
        logger.warning("alert rule %s: its %gs window holds about %d evaluations (every %gs), fewer than the %d "
                       "points it needs, so it cannot fire", name, window, evaluations, interval_seconds,
                       detection.min_points)


class Monitoring:
    """Quality monitoring (when enabled) and alert rules over the server's signals."""

    def __init__(self, quality_settings: QualitySettings, alert_settings: AlertSettings, instruments: Instruments,
                 repository: ModelRepository, hub: TelemetryHub | None, *, duration_bounds: tuple[float, ...],
                 store_settings: StoreSettings, store: Store | None, rolled_back: Readings | None = None) -> None:
        self._quality_settings = quality_settings
        self._alert_settings = alert_settings
        self._repository = repository
        self._hub = hub
        self.outcomes = (build_outcomes(quality_settings, store_settings, instruments, store)
                         if quality_settings.enabled and store is not None else None)
        self.quality = self.outcomes.monitor if self.outcomes is not None else None
        readings = quality_readings(self.quality) if self.quality is not None else {}
        if self.outcomes is not None:
            prediction_log = self.outcomes.log
            readings["store_queue"] = lambda: [({}, float(prediction_log.queued))]
        self.alerts: AlertLoop | None = None
        self.alert_listeners: list[Callable[[AlertTransition], None]] = []
        """Told of every alert that fires or resolves (e.g. the report history)."""
        self.slo: SLOTracker | None = None
        if alert_settings.enabled:
            self.slo = SLOTracker([Objective(s.name, s.kind, s.objective, s.period_days * 86400, s.latency_seconds)
                                   for s in alert_settings.slos], duration_bounds)
            rules = alert_rules(alert_settings)
            history = max((rule_window(r.signal, r.params) for r in rules), default=0.0)
            signals = SignalReader(instruments.aggregates, serving=self._serving, quality=self.quality, slo=self.slo,
                                   history_seconds=history + alert_settings.interval_seconds,
                                   rolled_back=rolled_back)
            notifier = (AlertmanagerNotifier(alert_settings.alertmanager_url,
                                             resend_seconds=alert_settings.resend_seconds)
                        if alert_settings.alertmanager_url else None)
            self.alerts = AlertLoop(AlertEngine(rules), signals, self.slo, publish=self._publish, notifier=notifier)
            slo = self.slo
            alerts = self.alerts
            readings.update({
                "slo_objective": slo.objective_readings,
                "slo_remaining": slo.remaining_readings,
                "slo_burn": slo.burn_readings,
                "alerts": lambda: _firing_counts(alerts)})
        register_quality_gauges(instruments, readings)

    def join_fleet(self, fleet: Fleet) -> None:
        """Evaluate alert rules only while this process decides for its fleet, on the fleet's summed signals."""
        if self.alerts is None:
            return
        self.alerts.active = lambda: fleet.is_leader
        self.alerts.signals.source = fleet.reading
        self.alerts.signals.set_serving(fleet.serving)

    def _serving(self) -> list[ServingState]:
        return [ServingState(m.name, str(v.version), v.is_ready, v.batcher.queue_depth if v.batcher else 0)
                for m in self._repository.models for v in m.versions.values()]

    def _publish(self, transition: AlertTransition) -> None:
        for listener in self.alert_listeners:
            listener(transition)
        if self._hub is None:
            return
        alert = transition.alert
        labels = alert.label_dict
        kind = Kind.ALERT_FIRED if transition.kind is TransitionKind.FIRED else Kind.ALERT_RESOLVED
        model, version = labels.get("model", ""), labels.get("version", "")
        summary = without_target(alert.summary, model, version)  # the event names the model and version apart
        self._hub.publish(kind, model=model, version=version,
                          message=f"{alert.rule.name} ({alert.rule.severity}): {summary}")

    def alert_states(self) -> list[AlertSnapshot]:
        """Firing alerts, for the Telemetry stream."""
        if self.alerts is None:
            return []
        out = []
        for alert in self.alerts.firing():
            labels = alert.label_dict
            model, version = labels.get("model", ""), labels.get("version", "")
            out.append(AlertSnapshot(alert.rule.name, str(alert.rule.severity), model, version, alert.summary,
                                     int((alert.fired_at or alert.active_since) * 1e9), alert.value,
                                     alert.rule.signal, self._value_text(alert.rule, alert.value, model, version)))
        return out

    def _value_text(self, rule: AlertRule, value: float, model: str, version: str) -> str:
        """The alert's value as people read it (told apart from the threshold); a drift status names what drifts:
        the worst feature's PSI for a feature test, the class mix's chi-square p-value for the chi2 test."""
        if rule.threshold is not None:
            text = format_apart(rule.signal, value, rule.threshold)[0]
        else:
            text = format_signal(rule.signal, value)
        quality = self.quality.get(model, version) if self.quality is not None else None
        drift = quality.drift if quality is not None else None
        if rule.signal != "drift_status" or drift is None:
            return text
        test = rule.params.get("test", "any")
        if test == "chi2":
            return f"{text}; class mix χ² p {drift.chi2_pvalue:.3g}"
        if drift.features:
            worst = max(drift.features, key=lambda f: f.psi)
            return f"{text}; worst PSI {worst.psi:.2f} ({worst.name})"
        return text

    async def on_model_change(self, model: Model) -> None:
        """Monitor each ready classifier version of `model` (with its reference profile when one is stored)."""
        monitor = self.quality
        if monitor is None:
            return
        for number, version in model.versions.items():
            key = str(number)
            config = version.config
            if not (version.is_ready and config.probability_output and config.labels):
                monitor.forget(model.name, key)
                continue
            if monitor.get(model.name, key) is not None:
                continue
            profile = None
            path = version.path / PROFILE_FILE
            if path.is_file():
                try:
                    profile = load_profile(path)
                except ProfileError as exc:
                    logger.warning("%s version %s: reference profile not used: %s", model.name, key, exc)
            monitor.watch(model.name, key, config.labels, config.probability_output, profile)
            if self.outcomes is not None:
                await self.outcomes.register(model.name, key, config.labels)
            logger.info("%s version %s: quality monitored%s", model.name, key,
                        " with a reference profile" if profile else " (no reference profile, so no drift check)")

    async def start(self) -> None:
        if self.quality is not None:
            await self.quality.start(interval_seconds=self._quality_settings.interval_seconds,
                                     drift_interval_seconds=self._quality_settings.drift_interval_seconds)
        if self.outcomes is not None:
            await self.outcomes.start()
        if self.alerts is not None:
            await self.alerts.start(self._alert_settings.interval_seconds)

    async def close(self) -> None:
        if self.alerts is not None:
            await self.alerts.close()
        if self.quality is not None:
            await self.quality.close()
        if self.outcomes is not None:  # after the monitor's last fold, so the last predictions are logged
            await self.outcomes.close()


def without_target(summary: str, model: str, version: str) -> str:
    """An alert summary without the "model vN: " it starts with, for lines that name the model and version apart."""
    for prefix in (f"{model} v{version}: ", f"{model}: "):
        if model and summary.startswith(prefix):
            return summary[len(prefix):]
    return summary


def _firing_counts(alerts: AlertLoop) -> list[tuple[dict[str, str], float]]:
    """Firing instances per rule, 0 for the quiet ones (so a dashboard sees every rule)."""
    counts = {(rule.name, str(rule.severity)): 0 for rule in alerts.engine.rules}
    for alert in alerts.firing():
        key = (alert.rule.name, str(alert.rule.severity))
        counts[key] = counts.get(key, 0) + 1
    return [({"alertname": name, "severity": severity}, float(n)) for (name, severity), n in sorted(counts.items())]
