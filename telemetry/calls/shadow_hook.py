"""The shadow hook: each shadow run's status, duration and agreement with the served answer, as metrics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vigil.telemetry.metrics.instruments import Instruments

logger = logging.getLogger(__name__)

SHADOW_SUFFIX = ".shadow"
"""A shadow run's request id is the served request's id with this suffix: feedback for the id reaches both."""


@dataclass(frozen=True)
class ShadowOutcome:
    """One shadow run: a copy of a served request, run on the shadow version, its answer never returned."""

    model: str
    version: str
    code: str
    """gRPC status code name the run would have answered ("OK", "INTERNAL", ...), or "SKIPPED"."""
    seconds: float = 0.0
    compared_rows: int = 0
    """Rows whose predicted class was compared with the served version's (classifiers)."""
    agreed_rows: int = 0


class ShadowTelemetry:
    """`DataPlane(..., shadow_hooks=[ShadowTelemetry(instruments).on_shadow])`."""

    def __init__(self, instruments: Instruments) -> None:
        self._instruments = instruments

    def on_shadow(self, outcome: ShadowOutcome) -> None:
        """Record one shadow run; never raises."""
        try:
            labels = (outcome.model, outcome.version)
            instruments = self._instruments
            if outcome.code == "SKIPPED":
                instruments.shadow_skipped.add(labels)
                return
            instruments.shadow_requests.add((*labels, outcome.code))
            instruments.shadow_duration.record(outcome.seconds, labels)
            if outcome.compared_rows:
                instruments.shadow_comparisons.add((*labels, "agree"), outcome.agreed_rows)
                instruments.shadow_comparisons.add((*labels, "disagree"), outcome.compared_rows - outcome.agreed_rows)
        except Exception:
            logger.exception("recording a shadow run failed")
