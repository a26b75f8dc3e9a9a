"""The alert loop: on a schedule, read the signals, advance the rules, and tell the log, the Telemetry stream and
an Alertmanager what fired and what resolved."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from vigil.telemetry.alerts.alertmanager import AlertmanagerNotifier
from vigil.telemetry.alerts.engine import ActiveAlert, AlertEngine, AlertTransition, Series, TransitionKind
from vigil.telemetry.alerts.rules import AlertRule
from vigil.telemetry.alerts.slo import SLOTracker
from vigil.telemetry.alerts.watched_values import SignalReader

logger = logging.getLogger(__name__)

Publish = Callable[[AlertTransition], None]


class AlertLoop:
    """Evaluates `engine`'s rules against `signals` every interval (or when `evaluate` is called).

    >>> loop = AlertLoop(AlertEngine(rules), signals, slo, publish=to_stream, notifier=None)
    >>> loop.evaluate(now=time.time())
    """

    def __init__(self, engine: AlertEngine, signals: SignalReader, slo: SLOTracker | None, *,
                 publish: Publish | None = None, notifier: AlertmanagerNotifier | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._signals = signals
        self._slo = slo
        self._publish = publish
        self._notifier = notifier
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.active: Callable[[], bool] = lambda: True
        """Whether this process evaluates the rules: in a fleet, only the member holding its lease does."""

    def evaluate(self, now: float | None = None) -> list[AlertTransition]:
        """One evaluation; returns what fired or resolved."""
        now = self._clock() if now is None else now
        reading = self._signals.observe(now)
        if self._slo is not None:
            self._slo.observe(reading, now)

        def read(rule: AlertRule) -> list[Series]:
            return self._signals.read(rule.signal, rule.params, rule.model)

        transitions = self.engine.evaluate(read, now)
        for transition in transitions:
            self._report(transition)
        if self._notifier is not None:
            self._notifier.notify(transitions, self.engine.firing())
        return transitions

    def _report(self, transition: AlertTransition) -> None:
        alert = transition.alert
        fired = transition.kind is TransitionKind.FIRED
        fields: dict[str, object] = {"alert": alert.rule.name, "severity": str(alert.rule.severity),
                                     "state": "firing" if fired else "resolved", "value": alert.value,
                                     "labels": alert.label_dict}
        if alert.details:  # an anomaly rule's band, a trend rule's prediction; NaN is not JSON
            fields["details"] = {name: None if math.isnan(v) else v for name, v in alert.details}
        logger.log(logging.WARNING if fired else logging.INFO, "alert %s %s: %s", alert.rule.name,
                   "firing" if fired else "resolved", alert.summary, extra={"fields": fields})
        if self._publish is not None:
            try:
                self._publish(transition)
            except Exception:
                logger.exception("publishing alert %s failed", alert.rule.name)

    @property
    def signals(self) -> SignalReader:
        return self._signals

    def stand_down(self, now: float | None = None) -> None:
        """Another member decides now: forget pending and firing alerts without resolving them (the new decider
        carries them on, under the same labels), but keep reading the signals, so that windows are whole should
        this member take over."""
        if self.engine.states():
            self.engine = AlertEngine(self.engine.rules)
        now = self._clock() if now is None else now
        reading = self._signals.observe(now)
        if self._slo is not None:
            self._slo.observe(reading, now)

    def firing(self) -> list[ActiveAlert]:
        return self.engine.firing()

    async def start(self, interval_seconds: float) -> None:
        """Evaluate every `interval_seconds` until `close`; starts the notifier too."""
        if self._notifier is not None:
            await self._notifier.start()

        async def run() -> None:
            while True:
                await asyncio.sleep(interval_seconds)
                try:
                    if self.active():
                        self.evaluate()
                    else:
                        self.stand_down()
                except Exception:
                    logger.exception("evaluating alert rules failed")

        self._task = asyncio.create_task(run(), name="alert-rules")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._notifier is not None:
            await self._notifier.close()
