"""Drift statistics agree with SciPy, flag shifted data and leave same-distribution data alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from vigil.telemetry.quality.drift import (
    DriftStatus,
    bin_counts,
    chi_square,
    ks_2samp,
    psi,
    pvalue_status,
    quantile_edges,
    score_status,
)


def _close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)


def _window(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=size)
    if kind == "rounded":  # continuous, with many ties
        return np.round(rng.normal(size=size), 1)
    return rng.integers(0, 5, size=size).astype(np.float64)  # discrete


@pytest.mark.parametrize(
    ("m", "n", "kind", "shift"),
    [
        (500, 500, "normal", 0.0),
        (500, 500, "normal", 0.3),
        (1000, 300, "normal", 0.1),
        (37, 2000, "normal", 0.0),
        (2000, 37, "normal", 0.5),
        (1500, 1500, "rounded", 0.0),
        (800, 333, "rounded", 0.2),
        (400, 250, "discrete", 0.0),
        (250, 400, "discrete", 1.0),
        (10, 7, "normal", 0.0),
    ],
)
def test_ks_matches_scipy_asymptotic(m: int, n: int, kind: str, shift: float) -> None:
    rng = np.random.default_rng(m * 7919 + n)
    reference = _window(kind, m, rng)
    live = _window(kind, n, rng) + shift
    expected = scipy.stats.ks_2samp(reference, live, method="asymp")
    statistic, pvalue = ks_2samp(np.sort(reference), live)
    assert _close(statistic, float(expected.statistic))
    assert _close(pvalue, float(expected.pvalue))


def test_ks_extremes_match_scipy() -> None:
    same = np.arange(100, dtype=np.float64)
    assert ks_2samp(same, same[::-1]) == (0.0, 1.0)
    apart = np.arange(100, 200, dtype=np.float64)
    statistic, pvalue = ks_2samp(same, apart)
    expected = scipy.stats.ks_2samp(same, apart, method="asymp")
    assert statistic == 1.0 == float(expected.statistic)
    assert _close(pvalue, float(expected.pvalue))
    assert pvalue < 1e-50


def test_ks_ignores_nans_and_needs_data_on_both_sides() -> None:
    rng = np.random.default_rng(3)
    reference, live = np.sort(rng.normal(size=300)), rng.normal(size=200) + 0.2
    with_nans = ks_2samp(np.append(reference, [np.nan, np.nan]), np.insert(live, [0, 50], np.nan))
    assert with_nans == ks_2samp(reference, live)
    for left, right in [(reference, []), ([], live), (reference, [np.nan, np.nan])]:
        statistic, pvalue = ks_2samp(left, right)
        assert math.isnan(statistic) and math.isnan(pvalue)


def test_ks_rejects_an_unsorted_reference() -> None:
    with pytest.raises(ValueError, match="not sorted"):
        ks_2samp([1.0, 3.0, 2.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("observed", "proportions"),
    [
        ([50, 30, 20], [0.5, 0.3, 0.2]),
        ([12, 61, 7, 20], [0.25, 0.25, 0.25, 0.25]),
        ([1000, 1], [0.9, 0.1]),
        ([3, 0, 9, 4, 4], [0.1, 0.2, 0.3, 0.15, 0.25]),
    ],
)
def test_chi_square_matches_scipy(observed: list[int], proportions: list[float]) -> None:
    total = sum(observed)
    expected = scipy.stats.chisquare(observed, np.asarray(proportions) * total)
    statistic, pvalue = chi_square(observed, proportions)
    assert _close(statistic, float(expected.statistic))
    assert _close(pvalue, float(expected.pvalue))


def test_chi_square_floors_and_renormalises_proportions() -> None:
    observed = [40, 50, 10]
    statistic, pvalue = chi_square(observed, [0.5, 0.5, 0.0], floor=1e-3)
    floored = np.array([0.5, 0.5, 1e-3]) / 1.001
    expected = scipy.stats.chisquare(observed, floored * 100)
    assert math.isfinite(statistic)
    assert _close(statistic, float(expected.statistic))
    assert _close(pvalue, float(expected.pvalue))


def test_chi_square_flags_a_changed_class_mix_only() -> None:
    rng = np.random.default_rng(11)
    reference = np.array([0.5, 0.3, 0.2])
    same = np.bincount(rng.choice(3, size=2000, p=reference), minlength=3)
    changed = np.bincount(rng.choice(3, size=2000, p=[0.4, 0.3, 0.3]), minlength=3)
    assert chi_square(same, reference)[1] > 0.05
    assert chi_square(changed, reference)[1] < 0.01


def test_chi_square_without_data_or_classes_is_nan() -> None:
    for observed, proportions in [([0, 0, 0], [0.2, 0.3, 0.5]), ([5], [1.0])]:
        statistic, pvalue = chi_square(observed, proportions)
        assert math.isnan(statistic) and math.isnan(pvalue)
    with pytest.raises(ValueError, match="3 observed counts but 2"):
        chi_square([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        chi_square([1, -2], [0.5, 0.5])


def test_psi_by_hand() -> None:
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.7 - 0.5) * math.log(0.7 / 0.5)
    assert psi([0.5, 0.5], [30, 70]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.16946, abs=1e-5)
    assert psi([0.25, 0.75], [25, 75]) == 0.0


def test_psi_floors_empty_bins() -> None:
    # Empty on both sides: both floored to the same value, so the bin adds nothing.
    assert psi([0.5, 0.5, 0.0], [50, 50, 0]) == pytest.approx(0.0, abs=1e-15)
    # Empty in the reference only: finite, and the floor sets its size.
    live = np.array([0.4, 0.4, 0.2])
    for floor in (1e-4, 1e-2):
        reference = np.maximum([0.5, 0.5, 0.0], floor)
        by_hand = float(np.sum((live - reference) * np.log(live / reference)))
        assert psi([0.5, 0.5, 0.0], [40, 40, 20], floor=floor) == pytest.approx(by_hand, rel=1e-12)
    assert psi([0.5, 0.5, 0.0], [40, 40, 20], floor=1e-4) > psi([0.5, 0.5, 0.0], [40, 40, 20], floor=1e-2)


def test_psi_without_live_data_is_nan() -> None:
    assert math.isnan(psi([0.5, 0.5], [0, 0]))
    with pytest.raises(ValueError, match="2 reference proportions but 3 live counts"):
        psi([0.5, 0.5], [1, 2, 3])


def _feature_drift(reference: np.ndarray, live: np.ndarray) -> tuple[float, float, float]:
    edges = quantile_edges(reference)
    proportions = bin_counts(reference, edges) / reference.size
    statistic, pvalue = ks_2samp(np.sort(reference), live)
    return psi(proportions, bin_counts(live, edges)), statistic, pvalue


def test_same_distribution_is_not_drift() -> None:
    rng = np.random.default_rng(2024)
    reference, live = rng.normal(3.0, 2.0, size=2000), rng.normal(3.0, 2.0, size=2000)
    index, _statistic, pvalue = _feature_drift(reference, live)
    assert index < 0.1
    assert pvalue > 0.05
    assert score_status(index, 0.1, 0.25) is DriftStatus.NO_DRIFT
    assert pvalue_status(pvalue, 0.05, 0.01) is DriftStatus.NO_DRIFT


def test_shift_by_one_sd_is_drift() -> None:
    rng = np.random.default_rng(2024)
    reference, live = rng.normal(3.0, 2.0, size=2000), rng.normal(5.0, 2.0, size=2000)
    index, statistic, pvalue = _feature_drift(reference, live)
    assert index > 0.25
    assert pvalue < 0.01
    assert statistic > 0.3
    assert score_status(index, 0.1, 0.25) is DriftStatus.DRIFT
    assert pvalue_status(pvalue, 0.05, 0.01) is DriftStatus.DRIFT


@pytest.mark.parametrize(
    ("score", "status"),
    [
        (0.0, DriftStatus.NO_DRIFT),
        (0.0999, DriftStatus.NO_DRIFT),
        (0.1, DriftStatus.POSSIBLE),
        (0.2499, DriftStatus.POSSIBLE),
        (0.25, DriftStatus.DRIFT),
        (7.0, DriftStatus.DRIFT),
        (math.inf, DriftStatus.DRIFT),
        (math.nan, DriftStatus.NO_DRIFT),
    ],
)
def test_score_status_thresholds(score: float, status: DriftStatus) -> None:
    assert score_status(score, 0.1, 0.25) is status


@pytest.mark.parametrize(
    ("pvalue", "status"),
    [
        (1.0, DriftStatus.NO_DRIFT),
        (0.05, DriftStatus.NO_DRIFT),
        (0.0499, DriftStatus.POSSIBLE),
        (0.01, DriftStatus.POSSIBLE),
        (0.0099, DriftStatus.DRIFT),
        (0.0, DriftStatus.DRIFT),
        (math.nan, DriftStatus.NO_DRIFT),
    ],
)
def test_pvalue_status_thresholds(pvalue: float, status: DriftStatus) -> None:
    assert pvalue_status(pvalue, 0.05, 0.01) is status


def test_status_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="above the drift threshold"):
        score_status(0.2, 0.25, 0.1)
    with pytest.raises(ValueError, match="above the possible-drift threshold"):
        pvalue_status(0.2, 0.01, 0.05)


def test_status_labels_and_order() -> None:
    assert [s.label for s in DriftStatus] == ["no_drift", "possible_drift", "drift"]
    assert max(DriftStatus.POSSIBLE, DriftStatus.DRIFT, DriftStatus.NO_DRIFT) is DriftStatus.DRIFT
    assert int(DriftStatus.POSSIBLE) == 1


def test_quantile_edges_are_the_reference_deciles() -> None:
    values = np.arange(1.0, 1001.0)
    edges = quantile_edges(values)
    assert edges.dtype == np.float64
    np.testing.assert_array_equal(edges, np.arange(100.0, 1000.0, 100.0))
    np.testing.assert_array_equal(bin_counts(values, edges), np.full(10, 100))
    np.testing.assert_array_equal(quantile_edges(values, bins=4), [250.0, 500.0, 750.0])
    shuffled = np.random.default_rng(5).permutation(values)
    np.testing.assert_array_equal(quantile_edges(shuffled), edges)


def test_quantile_edges_collapse_repeats_and_ignore_nans() -> None:
    discrete = np.array([0.0] * 50 + [1.0] * 30 + [2.0] * 20)
    edges = quantile_edges(discrete)
    np.testing.assert_array_equal(edges, [0.0, 1.0, 2.0])  # deciles 0 (x5), 1 (x3), 2: the values themselves
    np.testing.assert_array_equal(bin_counts(discrete, edges), [50, 30, 20, 0])
    with_nans = np.concatenate([np.arange(100.0), [np.nan] * 40])
    np.testing.assert_array_equal(quantile_edges(with_nans), quantile_edges(np.arange(100.0)))
    assert quantile_edges(np.arange(10.0), bins=1).size == 0
    with pytest.raises(ValueError, match="at least 1"):
        quantile_edges(np.arange(10.0), bins=0)


def test_constant_feature() -> None:
    reference = np.full(500, 4.2)
    edges = quantile_edges(reference)
    np.testing.assert_array_equal(edges, [4.2])
    proportions = bin_counts(reference, edges) / reference.size
    np.testing.assert_array_equal(proportions, [1.0, 0.0])
    assert psi(proportions, bin_counts(np.full(300, 4.2), edges)) == pytest.approx(0.0, abs=1e-15)
    assert psi(proportions, bin_counts(np.full(300, 5.0), edges)) > 0.25


def test_no_reference_values_gives_a_single_bin() -> None:
    edges = quantile_edges([np.nan, np.nan])
    assert edges.size == 0
    np.testing.assert_array_equal(bin_counts([1.0, -3.0, np.nan], edges), [2])


def test_bin_counts_put_values_on_an_edge_in_the_lower_bin() -> None:
    values = [0.0, 1.0, 1.5, 2.0, 2.5, np.nan, -np.inf, np.inf, 1.0000001]
    counts = bin_counts(values, [1.0, 2.0])
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [3, 3, 2])  # (-inf, 1], (1, 2], (2, inf); the NaN is dropped


def test_bin_counts_reject_unsorted_edges() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        bin_counts([1.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        bin_counts([1.0], [1.0, 1.0])
