"""Prediction quality of classifiers: class mix, confidence, feedback accuracy, the label-free estimate and drift.

Nothing here runs on the request path. The batch hook only queues each finished batch; `process` folds the queue
into the instruments and the windows on a schedule (and before feedback is joined), and hands each request's
prediction to the sink the server gives it (the prediction log); `check_drift` compares each version's live window
with its reference profile, on its own schedule, in a worker thread. Accuracy comes from the prediction log as
`QualityFigures`, which the server sets on a schedule. Memory is bounded by the settings: pending batches and
window rows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.telemetry.calls.shadow_hook import SHADOW_SUFFIX
from vigil.telemetry.metrics.instruments import Instruments
from vigil.telemetry.quality.calibration import expected_accuracy
from vigil.telemetry.quality.drift_check import DriftResult, DriftThresholds, drift_against
from vigil.telemetry.quality.figures import QualityFigures, empty_figures
from vigil.telemetry.quality.outcomes import LoggedPrediction
from vigil.telemetry.quality.reference_profile import ReferenceProfile
from vigil.telemetry.quality.windows import RowWindow, ValueWindow

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""(model, version)."""


@dataclass(frozen=True)
class QualityLimits:
    """Sizes, ages and schedules of the quality windows (see `vigil.server.settings.settings.QualitySettings`)."""

    accuracy_rows: int = 1000
    accuracy_seconds: float = 3600.0
    expected_rows: int = 1000
    drift_rows: int = 2000
    drift_seconds: float = 3600.0
    drift_sample_ratio: float = 1.0
    drift_min_rows: int = 100
    max_pending_batches: int = 4096


Sink = Callable[[list[LoggedPrediction]], None]
"""Where folded predictions go (the server's prediction log); called on the event loop, must not block."""

MAX_LOGGED_PROBABILITIES = 32
"""Classes up to which a prediction's whole probability vector goes to the log; beyond it only the top one."""


class VersionQuality:
    """The quality state of one classifier version."""

    def __init__(self, model: str, version: str, labels: Sequence[str], probability_output: str,
                 profile: ReferenceProfile | None, limits: QualityLimits) -> None:
        self.model, self.version = model, version
        self.labels = tuple(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.probability_output = probability_output
        self.profile = profile
        self.figures: QualityFigures = empty_figures(len(self.labels), count_rows=limits.accuracy_rows,
                                                     seconds=limits.accuracy_seconds, now=time.time())
        """Accuracy from the prediction log, as of its latest refresh."""
        self.confidences = ValueWindow(limits.expected_rows)
        self.rows = RowWindow(limits.drift_rows, len(profile.features)) if profile is not None else None
        self.drift: DriftResult | None = None
        """The drift every reader sees: of the whole fleet, where other members report drift too."""
        self.own_drift: DriftResult | None = None
        """The drift of this process's own live window, which it publishes to its fleet."""
        self.fleet_drift: DriftResult | None = None
        """The drift of the fleet's pooled windows, where other members report drift of this version too."""
        self.input_problem_logged = False

    def expected_accuracy(self) -> float | None:
        values = self.confidences.values()
        if len(values) == 0:
            return None
        calibration = self.profile.calibration if self.profile is not None else None
        return expected_accuracy(values, calibration)


class QualityMonitor:
    """Quality monitoring for every classifier version the server serves.

    >>> monitor = QualityMonitor(instruments, QualityLimits(), DriftThresholds(), sink=prediction_log.log)
    >>> monitor.watch("m", "1", ["no", "yes"], "probabilities", profile=None)
    >>> batcher.add_hook(monitor.on_batch)
    >>> await monitor.start(interval_seconds=0.5, drift_interval_seconds=30)
    """

    def __init__(self, instruments: Instruments, limits: QualityLimits, thresholds: DriftThresholds, *,
                 sink: Sink | None = None, clock: Any = time.time, seed: int | None = None) -> None:
        self._instruments = instruments
        self._limits = limits
        self._thresholds = thresholds
        self._sink = sink
        self._clock = clock
        self._versions: dict[Key, VersionQuality] = {}
        self._pending: deque[Any] = deque()
        self.skipped_batches = 0
        """Finished batches not folded in because the queue was full."""
        self._rng = np.random.default_rng(seed)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def thresholds(self) -> DriftThresholds:
        """What drift tests are judged by."""
        return self._thresholds

    @property
    def limits(self) -> QualityLimits:
        return self._limits

    def now(self) -> float:
        """The monitor's clock (Unix seconds)."""
        return float(self._clock())

    # -- registration -------------------------------------------------------------------------------------------

    def watch(self, model: str, version: str, labels: Sequence[str], probability_output: str,
              profile: ReferenceProfile | None) -> None:
        """Monitor a classifier version (again, from scratch, if it was monitored before)."""
        if profile is not None and tuple(profile.labels) != tuple(labels):
            logger.warning("the reference profile of %s version %s has labels %s, not the model's %s; drift is "
                           "not checked", model, version, list(profile.labels), list(labels))
            profile = None
        self._versions[(model, version)] = VersionQuality(model, version, labels, probability_output, profile,
                                                          self._limits)

    def forget(self, model: str, version: str) -> None:
        self._versions.pop((model, version), None)

    def versions(self) -> list[VersionQuality]:
        return [self._versions[k] for k in sorted(self._versions)]

    def get(self, model: str, version: str) -> VersionQuality | None:
        return self._versions.get((model, version))

    # -- the batch hook and the fold ----------------------------------------------------------------------------

    def on_batch(self, record: Any) -> None:
        """Queue a finished batch (the batcher's `BatchRecord`) of a monitored version; O(1), never raises."""
        if record.failed or (record.model, str(record.version)) not in self._versions:
            return
        if len(self._pending) >= self._limits.max_pending_batches:
            skipped = self._pending.popleft()
            self.skipped_batches += 1
            self._instruments.store_dropped.add((), len(skipped.request_ids))  # their predictions are not logged
        self._pending.append(record)

    def process(self) -> None:
        """Fold every queued batch into the instruments, the windows and the sink. Batches of one
        version are folded together, so the array work is per fold, not per batch (batches are often one row)."""
        now = self._clock()
        by_version: dict[Key, list[Any]] = {}
        while self._pending:
            record = self._pending.popleft()
            by_version.setdefault((record.model, str(record.version)), []).append(record)
        stored: list[LoggedPrediction] = []
        for key, records in by_version.items():
            quality = self._versions.get(key)
            if quality is None:
                continue
            try:
                self._fold(quality, records, now, stored)
            except Exception:
                logger.exception("folding batches of %s version %s into quality monitoring failed", *key)
        if stored and self._sink is not None:
            self._sink(stored)

    def _fold(self, quality: VersionQuality, records: list[Any], now: float, stored: list[LoggedPrediction]) -> None:
        classes = len(quality.labels)
        profile = quality.profile if quality.rows is not None else None
        parts: list[npt.NDArray[Any]] = []
        requests: list[tuple[str, int, float]] = []
        inputs: list[npt.NDArray[Any] | None] = []
        for record in records:
            p = record.outputs.get(quality.probability_output)
            if p is None or p.ndim != 2 or p.shape[1] != classes or len(p) == 0:
                continue
            rows_per_request = record.request_rows
            if sum(rows_per_request) != len(p):  # a model without a batch dimension runs one request at a time
                if len(record.request_ids) != 1:
                    continue
                rows_per_request = (len(p),)
            answered = record.ended_ns / 1e9 if record.ended_ns else now  # the prediction time
            requests.extend((r, n, answered) for r, n in zip(record.request_ids, rows_per_request, strict=True))
            parts.append(p)
            if profile is not None:
                inputs.append(self._feature_rows(quality, profile, record.inputs, len(p)))
        if not parts:
            return
        p = np.concatenate(parts).astype(np.float64, copy=False)
        top = p.argmax(axis=1)
        confidence = p[np.arange(len(p)), top]
        runner_up = np.partition(p, -2, axis=1)[:, -2] if classes > 1 else np.zeros(len(p))
        labels = (quality.model, quality.version)
        instruments = self._instruments
        for index, count in enumerate(np.bincount(top, minlength=classes)):
            if count:
                instruments.predictions.add((quality.model, quality.version, quality.labels[index]), int(count))
        instruments.confidence.record_array(confidence, labels)
        instruments.margin.record_array(confidence - runner_up, labels)
        quality.confidences.add(confidence)
        offset = 0
        model, version = quality.model, quality.version
        top32 = confidence.astype(np.float32)
        vectors = p.astype(np.float32) if classes <= MAX_LOGGED_PROBABILITIES else None
        for request_id, rows, answered in requests:
            end = offset + rows
            stored.append(LoggedPrediction(request_id, answered, model, version, request_id.endswith(SHADOW_SUFFIX),
                                           top[offset:end], top32[offset:end],
                                           vectors[offset:end] if vectors is not None else None))
            offset = end
        if profile is not None and quality.rows is not None:
            self._sample_rows(quality, inputs, [len(part) for part in parts], top, now)

    def _feature_rows(self, quality: VersionQuality, profile: ReferenceProfile, inputs: Any,
                      rows: int) -> npt.NDArray[Any] | None:
        """The batch's rows of the profiled input, or None (logged once) when they do not fit the profile."""
        x = inputs.get(profile.input)
        if x is None or x.ndim != 2 or x.shape[1] != len(profile.features) or len(x) != rows:
            if not quality.input_problem_logged:
                quality.input_problem_logged = True
                logger.warning("input %r of %s version %s does not match its reference profile (%d features); "
                               "drift is not checked", profile.input, quality.model, quality.version,
                               len(profile.features))
            return None
        return np.asarray(x)

    def _sample_rows(self, quality: VersionQuality, inputs: list[npt.NDArray[Any] | None], sizes: list[int],
                     top: npt.NDArray[np.intp], now: float) -> None:
        assert quality.rows is not None
        present = [x for x in inputs if x is not None]
        if not present:
            return
        x: npt.NDArray[Any] = np.concatenate(present)
        if len(present) < len(inputs):  # keep the predictions of the batches whose rows are kept
            top = top[np.repeat([part is not None for part in inputs], sizes)]
        ratio = self._limits.drift_sample_ratio
        if ratio < 1.0:
            keep = self._rng.random(len(x)) < ratio
            x, top = x[keep], top[keep]
        if len(x):
            quality.rows.add(x, top, now)

    # -- feedback ------------------------------------------------------------------------------------------------

    def count_feedback(self, model: str, version: str, rows: int, correct: int) -> None:
        """Count labelled rows this process joined (each prediction's first labels only)."""
        self._instruments.feedback.add((model, version), rows)
        self._instruments.feedback_correct.add((model, version), correct)

    def set_figures(self, model: str, version: str, figures: QualityFigures) -> None:
        """The version's latest accuracy figures from the prediction log."""
        quality = self._versions.get((model, version))
        if quality is not None and quality.labels == figures.labels:
            quality.figures = figures

    # -- drift --------------------------------------------------------------------------------------------------

    def check_drift(self) -> None:
        """Compare every profiled version's live window with its reference (safe to call from a worker thread). A
        window under the minimum of rows is not judged, but its counts are kept (`own_drift`): a fleet pools them."""
        now = self._clock()
        for quality in list(self._versions.values()):
            if quality.rows is None or quality.profile is None:
                continue
            try:
                result = drift_against(quality.profile, *quality.rows.read(now, self._limits.drift_seconds),
                                       self._thresholds, now=now, min_rows=1)
            except Exception:
                logger.exception("the drift check of %s version %s failed", quality.model, quality.version)
                continue
            if result is not None:
                quality.own_drift = result
                if quality.fleet_drift is None and result.window_rows >= self._limits.drift_min_rows:
                    quality.drift = result

    # -- schedule -----------------------------------------------------------------------------------------------

    async def start(self, *, interval_seconds: float, drift_interval_seconds: float) -> None:
        """Fold batches every `interval_seconds` and check drift every `drift_interval_seconds`, until `close`."""
        async def fold() -> None:
            while True:
                await asyncio.sleep(interval_seconds)
                self.process()

        async def drift() -> None:
            while True:
                await asyncio.sleep(drift_interval_seconds)
                self.process()
                await asyncio.to_thread(self.check_drift)

        self._tasks = [asyncio.create_task(fold(), name="quality-fold"),
                       asyncio.create_task(drift(), name="quality-drift")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.process()  # the last batches' predictions count too (the report history flushes after this)
