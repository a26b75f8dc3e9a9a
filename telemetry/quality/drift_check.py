"""A version's live window checked against its reference profile: PSI and Kolmogorov–Smirnov per feature,
chi-square of the predicted classes, each with its status against the thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

from vigil.telemetry.quality.drift import (
    DriftStatus,
    bin_counts,
    chi_square,
    ks_2samp,
    psi,
    pvalue_status,
    score_status,
)
from vigil.telemetry.quality.reference_profile import ReferenceProfile


@dataclass(frozen=True)
class DriftThresholds:
    """(possible, drift) thresholds: PSI at or above; KS and chi-square p-values below."""

    psi: tuple[float, float] = (0.1, 0.25)
    ks_pvalue: tuple[float, float] = (0.05, 0.01)
    chi2_pvalue: tuple[float, float] = (0.05, 0.01)


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    psi_status: DriftStatus
    ks_statistic: float
    ks_pvalue: float
    ks_status: DriftStatus
    live_proportions: tuple[float, ...]
    """Share of live rows in each of the reference's bins."""


@dataclass(frozen=True)
class DriftResult:
    """One drift check of one version."""

    computed_at: float
    """Unix time."""
    window_rows: int
    features: tuple[FeatureDrift, ...]
    chi2_statistic: float
    chi2_pvalue: float
    chi2_status: DriftStatus
    live_class_proportions: tuple[float, ...]

    @property
    def status(self) -> DriftStatus:
        statuses = [self.chi2_status, *(f.psi_status for f in self.features), *(f.ks_status for f in self.features)]
        return max(statuses)

    def worst(self, test: str) -> DriftStatus:
        """The worst status of one test ("psi", "ks", "chi2") or of all ("any")."""
        if test == "chi2":
            return self.chi2_status
        if test == "any":
            return self.status
        return max((getattr(f, f"{test}_status") for f in self.features), default=DriftStatus.NO_DRIFT)


def drift_against(profile: ReferenceProfile, rows: npt.NDArray[np.float64], classes: npt.NDArray[np.intp],
                  thresholds: DriftThresholds, *, now: float, min_rows: int) -> DriftResult | None:
    """PSI and KS per feature, chi-square of the predicted classes; None when the window has fewer than
    `min_rows` rows."""
    if len(rows) < min_rows:
        return None
    features = []
    for column, reference in enumerate(profile.features):
        values = rows[:, column]
        edges = np.asarray(reference.edges, np.float64)
        counts = bin_counts(values, edges)
        score = psi(np.asarray(reference.proportions), counts)
        statistic, pvalue = ks_2samp(reference.sorted_sample, values)
        total = counts.sum()
        features.append(FeatureDrift(
            reference.name, score, score_status(score, *thresholds.psi), statistic, pvalue,
            pvalue_status(pvalue, *thresholds.ks_pvalue),
            tuple(float(c) / total if total else 0.0 for c in counts)))
    class_counts = np.bincount(classes, minlength=len(profile.labels))
    chi2, chi2_p = chi_square(class_counts, np.asarray(profile.predicted_prior))
    return DriftResult(now, len(rows), tuple(features), chi2, chi2_p, pvalue_status(chi2_p, *thresholds.chi2_pvalue),
                       tuple(float(c) / len(classes) for c in class_counts))


def drift_from_counts(profile: ReferenceProfile, feature_counts: Sequence[npt.ArrayLike], class_counts: npt.ArrayLike,
                      thresholds: DriftThresholds, *, now: float, min_rows: int) -> DriftResult | None:
    """Drift of live rows known only by their counts in the reference's bins (as several processes' windows add
    up): PSI and chi-square as from the rows themselves; KS from the binned distributions, the largest gap between
    the live CDF and the reference's at the bin edges (the gap between edges is not seen), with the asymptotic
    p-value of the same effective size. None under `min_rows` rows."""
    classes = np.asarray(class_counts, np.int64)
    rows = int(classes.sum())
    if rows < min_rows:
        return None
    features = []
    for reference, raw in zip(profile.features, feature_counts, strict=True):
        counts = np.asarray(raw, np.int64)
        total = int(counts.sum())
        score = psi(np.asarray(reference.proportions), counts)
        live_cdf = np.cumsum(counts)[:-1] / total if total else np.zeros(len(reference.edges))
        reference_cdf = np.cumsum(np.asarray(reference.proportions))[:-1]
        statistic = float(np.max(np.abs(live_cdf - reference_cdf), initial=0.0))
        m, n = float(max(len(reference.sample), 1)), float(max(total, 1))
        effective_n = max(round(max(m, n) * min(m, n) / (m + n)), 1)
        pvalue = float(np.clip(stats.kstwo.sf(statistic, float(effective_n)), 0.0, 1.0))
        features.append(FeatureDrift(
            reference.name, score, score_status(score, *thresholds.psi), statistic, pvalue,
            pvalue_status(pvalue, *thresholds.ks_pvalue),
            tuple(float(c) / total if total else 0.0 for c in counts)))
    chi2, chi2_p = chi_square(classes, np.asarray(profile.predicted_prior))
    return DriftResult(now, rows, tuple(features), chi2, chi2_p, pvalue_status(chi2_p, *thresholds.chi2_pvalue),
                       tuple(float(c) / rows for c in classes))


def drift_counts(result: DriftResult) -> tuple[list[list[int]], list[int]]:
    """The live counts a drift result was computed from: per feature, rows in each reference bin; rows per
    predicted class."""
    rows = result.window_rows
    return ([[round(p * rows) for p in f.live_proportions] for f in result.features],
            [round(p * rows) for p in result.live_class_proportions])
