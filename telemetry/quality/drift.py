"""Drift statistics comparing a live window of model inputs or outputs with a reference sample.

Numeric features are compared by the Population Stability Index over quantile bins of the reference and by the
two-sample Kolmogorov-Smirnov test; categorical outputs (predicted classes) by Pearson's chi-square goodness of
fit. Each statistic maps to a `DriftStatus` through two thresholds. NaNs in the data are ignored throughout.
"""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

_NAN = float("nan")


class DriftStatus(enum.IntEnum):
    """How far a live window has moved from the reference; ordered, so the worst of several is `max`."""

    NO_DRIFT = 0
    POSSIBLE = 1
    DRIFT = 2

    @property
    def label(self) -> str:
        """The status as a metric or log label: "no_drift", "possible_drift" or "drift"."""
        return _LABELS[self]


_LABELS = {DriftStatus.NO_DRIFT: "no_drift", DriftStatus.POSSIBLE: "possible_drift", DriftStatus.DRIFT: "drift"}


def score_status(score: float, possible: float, drift: float) -> DriftStatus:
    """The status of a score where higher is worse (PSI, KS statistic).

    `score >= drift` is DRIFT, else `score >= possible` is POSSIBLE, else NO_DRIFT; a NaN score (no data) is
    NO_DRIFT. Raises ValueError when `possible > drift`.
    """
    if possible > drift:
        raise ValueError(f"the possible-drift threshold {possible} is above the drift threshold {drift}")
    if score >= drift:
        return DriftStatus.DRIFT
    if score >= possible:
        return DriftStatus.POSSIBLE
    return DriftStatus.NO_DRIFT


def pvalue_status(pvalue: float, possible: float, drift: float) -> DriftStatus:
    """The status of a p-value, where lower is worse (e.g. possible=0.05, drift=0.01).

    `pvalue < drift` is DRIFT, else `pvalue < possible` is POSSIBLE, else NO_DRIFT; a NaN p-value (no data) is
    NO_DRIFT. Raises ValueError when `drift > possible`.
    """
    if drift > possible:
        raise ValueError(f"the drift threshold {drift} is above the possible-drift threshold {possible}")
    if pvalue < drift:
        return DriftStatus.DRIFT
    if pvalue < possible:
        return DriftStatus.POSSIBLE
    return DriftStatus.NO_DRIFT


def _finite_1d(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return array[np.isfinite(array)]


def _not_nan_1d(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return array[~np.isnan(array)]


def quantile_edges(values: npt.ArrayLike, bins: int = 10) -> npt.NDArray[np.float64]:
    """Inner bin edges at the reference's quantiles 1/bins, ..., (bins-1)/bins: sorted and unique.

    The bins they define are (-inf, e0], (e0, e1], ..., (e_last, +inf) (see `bin_counts`). Each edge is a
    reference value (the smallest with an empirical CDF of at least the quantile's level), so the bin ending at
    it holds at least that share of the reference. Repeated quantiles collapse, so a feature with few distinct
    values gets fewer edges: a constant one gets a single edge (its value), and no values at all get none (one
    bin). NaNs and infinities do not place edges.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    finite = _finite_1d(values)
    if finite.size == 0 or bins == 1:
        return np.empty(0, dtype=np.float64)
    quantiles = np.quantile(finite, np.arange(1, bins) / bins, method="inverted_cdf")
    return np.unique(quantiles).astype(np.float64, copy=False)


def bin_counts(values: npt.ArrayLike, edges: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Counts of values in each of the len(edges)+1 bins (-inf, e0], (e0, e1], ..., (e_last, +inf).

    A value equal to an edge counts in the bin below it. NaNs are not counted. Raises ValueError when the edges
    are not one-dimensional and strictly increasing.
    """
    edge_array = np.asarray(edges, dtype=np.float64)
    if edge_array.ndim != 1:
        raise ValueError(f"edges must be one-dimensional, got shape {edge_array.shape}")
    if np.any(np.isnan(edge_array)) or np.any(np.diff(edge_array) <= 0):
        raise ValueError("edges must be strictly increasing")
    indices = np.searchsorted(edge_array, _not_nan_1d(values), side="left")
    return np.bincount(indices, minlength=edge_array.size + 1).astype(np.int64, copy=False)


def psi(reference_proportions: npt.ArrayLike, live_counts: npt.ArrayLike, *, floor: float = 1e-4) -> float:
    """Population Stability Index of live bin counts against the reference's bin proportions.

    PSI = sum((p_live - p_ref) * ln(p_live / p_ref)) over bins, where p_live = live_counts / sum(live_counts)
    and every entry of both proportion vectors is first raised to at least `floor`: a bin empty on one side
    would otherwise make the index infinite. So the index is finite and bounded, and bins empty on both sides
    contribute nothing. Conventionally < 0.1 is stable, 0.1-0.25 a moderate shift, > 0.25 a major shift.
    Returns NaN when the live counts sum to 0. Raises ValueError when the lengths differ.
    """
    reference = np.asarray(reference_proportions, dtype=np.float64).reshape(-1)
    counts = np.asarray(live_counts, dtype=np.float64).reshape(-1)
    if reference.shape != counts.shape:
        raise ValueError(f"{reference.size} reference proportions but {counts.size} live counts")
    total = float(counts.sum())
    if total == 0:
        return _NAN
    p_ref = np.maximum(reference, floor)
    p_live = np.maximum(counts / total, floor)
    return float(np.sum((p_live - p_ref) * np.log(p_live / p_ref)))


def ks_2samp(reference_sorted: npt.ArrayLike, live: npt.ArrayLike) -> tuple[float, float]:
    """Two-sided two-sample Kolmogorov-Smirnov test: (statistic, p-value).

    The statistic is the largest absolute difference between the two empirical CDFs; the p-value is the
    asymptotic one of `scipy.stats.ks_2samp(reference, live, method="asymp")`, the survival function of the
    one-sample KS distribution `kstwo` at round(m*n/(m+n)). `reference_sorted` must be sorted ascending (sort it
    once per reference); NaNs are ignored on both sides. Returns (nan, nan) when either side is empty. Raises
    ValueError when the reference is not sorted.
    """
    reference = _not_nan_1d(reference_sorted)
    if np.any(np.diff(reference) < 0):
        raise ValueError("reference_sorted is not sorted in ascending order")
    live_sorted = np.sort(_not_nan_1d(live))
    m, n = reference.size, live_sorted.size
    if m == 0 or n == 0:
        return _NAN, _NAN
    points = np.concatenate([reference, live_sorted])
    cdf_reference = np.searchsorted(reference, points, side="right") / m
    cdf_live = np.searchsorted(live_sorted, points, side="right") / n
    statistic = float(np.max(np.abs(cdf_reference - cdf_live)))
    larger, smaller = float(max(m, n)), float(min(m, n))
    effective_n = round(larger * smaller / (larger + smaller))
    pvalue = float(np.clip(stats.kstwo.sf(statistic, float(effective_n)), 0.0, 1.0))
    return statistic, pvalue


def chi_square(
    observed_counts: npt.ArrayLike, expected_proportions: npt.ArrayLike, *, floor: float = 1e-4
) -> tuple[float, float]:
    """Pearson chi-square goodness of fit of live class counts to reference class proportions: (statistic, p).

    Each proportion is raised to at least `floor` (a class absent from the reference would otherwise give an
    infinite statistic) and the proportions renormalised to sum to 1; the expected counts are those times the
    observed total. The statistic is sum((o - e)^2 / e), the p-value its chi-square survival function with
    k-1 degrees of freedom. Returns (nan, nan) when nothing was observed or there are fewer than 2 classes.
    Raises ValueError when the lengths differ or a count or proportion is negative or not finite.
    """
    observed = np.asarray(observed_counts, dtype=np.float64).reshape(-1)
    proportions = np.asarray(expected_proportions, dtype=np.float64).reshape(-1)
    if observed.shape != proportions.shape:
        raise ValueError(f"{observed.size} observed counts but {proportions.size} expected proportions")
    if not (np.all(np.isfinite(observed)) and np.all(observed >= 0)):
        raise ValueError("observed counts must be finite and non-negative")
    if not (np.all(np.isfinite(proportions)) and np.all(proportions >= 0)):
        raise ValueError("expected proportions must be finite and non-negative")
    total = float(observed.sum())
    if total == 0 or observed.size < 2:
        return _NAN, _NAN
    floored = np.maximum(proportions, floor)
    expected = floored / floored.sum() * total
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    pvalue = float(stats.chi2.sf(statistic, observed.size - 1))
    return statistic, pvalue
