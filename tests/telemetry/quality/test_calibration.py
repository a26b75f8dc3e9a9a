"""Isotonic calibration matches scikit-learn and turns confidences into accurate label-free accuracy estimates."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from vigil.telemetry.quality.calibration import Calibration, expected_accuracy, fit_isotonic


def _overconfident(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Top-class confidences of a 3-class model, right only with probability confidence**3."""
    confidences = rng.uniform(1 / 3, 1.0, size=size)
    correct = rng.random(size) < confidences**3
    return confidences, correct


@pytest.mark.parametrize("seed", range(6))
def test_fit_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    size = [50, 300, 2000][seed % 3]
    confidences = np.round(rng.beta(5, 2, size=size), 2 if seed < 3 else 4)  # many ties
    correct = (rng.random(size) < confidences**2).astype(np.float64)
    reference = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(confidences, correct)
    calibration = fit_isotonic(confidences, correct)

    np.testing.assert_allclose(calibration.thresholds, reference.X_thresholds_, rtol=0, atol=0)
    np.testing.assert_allclose(calibration.values, reference.y_thresholds_, rtol=0, atol=1e-12)
    queries = np.concatenate([np.linspace(-0.2, 1.2, 2801), rng.uniform(0, 1, 1000), confidences])
    np.testing.assert_allclose(calibration.apply(queries), reference.predict(queries), rtol=0, atol=1e-12)


def test_fit_accepts_booleans_like_sklearn() -> None:
    rng = np.random.default_rng(9)
    confidences, correct = _overconfident(500, rng)
    reference = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(confidences, correct.astype(float))
    queries = np.linspace(0, 1, 501)
    np.testing.assert_allclose(
        fit_isotonic(confidences, correct).apply(queries), reference.predict(queries), atol=1e-12
    )


def test_pool_adjacent_violators_by_hand() -> None:
    calibration = fit_isotonic([0.5, 0.1, 0.3, 0.2, 0.4], [1, 1, 0, 0, 1])
    # Sorted by confidence the targets are 1, 0, 0, 1, 1: the first three pool to 1/3.
    assert calibration.thresholds == (0.1, 0.3, 0.4, 0.5)
    assert calibration.values == pytest.approx((1 / 3, 1 / 3, 1.0, 1.0), abs=1e-15)
    np.testing.assert_allclose(calibration.apply([0.0, 0.2, 0.35, 0.45, 0.9]), [1 / 3, 1 / 3, 2 / 3, 1.0, 1.0])


def test_ties_are_pooled_before_fitting() -> None:
    calibration = fit_isotonic([0.5, 0.7, 0.5, 0.5], [1, 1, 0, 0])
    assert calibration.thresholds == (0.5, 0.7)
    assert calibration.values == pytest.approx((1 / 3, 1.0), abs=1e-15)
    # A later, lower mean pools with the tied group: (0+0+1 at 0.5, then 0 at 0.6) -> 1/4 over both.
    pooled = fit_isotonic([0.5, 0.5, 0.5, 0.6], [0, 0, 1, 0])
    assert pooled.thresholds == (0.5, 0.6)
    assert pooled.values == pytest.approx((0.25, 0.25), abs=1e-15)


def test_a_single_confidence_gives_a_constant_calibration() -> None:
    calibration = fit_isotonic([0.8, 0.8, 0.8, 0.8], [True, False, True, True])
    assert calibration.thresholds == (0.8,)
    assert calibration.values == (0.75,)
    np.testing.assert_array_equal(calibration.apply([0.1, 0.8, 0.99]), [0.75, 0.75, 0.75])


def test_apply_keeps_shape_and_nan() -> None:
    calibration = Calibration((0.0, 1.0), (0.2, 0.6))
    result = calibration.apply(np.array([[0.5, np.nan], [2.0, -1.0]], dtype=np.float32))
    assert result.dtype == np.float64
    assert result.shape == (2, 2)
    np.testing.assert_allclose(result, [[0.4, np.nan], [0.6, 0.2]])


@pytest.mark.parametrize(
    ("confidences", "correct", "message"),
    [
        ([], [], "no data"),
        ([0.5, 0.6], [1], "2 confidences but 1"),
        ([0.5, np.nan], [1, 0], "finite"),
        ([0.5, 0.6], [1, 2], r"\[0, 1\]"),
        ([0.5, 0.6], [1, np.nan], r"\[0, 1\]"),
    ],
)
def test_fit_rejects_bad_input(confidences: list[float], correct: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_isotonic(confidences, correct)


def test_well_calibrated_model_needs_no_calibration() -> None:
    rng = np.random.default_rng(7)
    confidences = rng.uniform(0.5, 1.0, size=20000)
    correct = rng.random(20000) < confidences
    assert abs(expected_accuracy(confidences, None) - correct.mean()) < 0.01


def test_calibration_corrects_an_overconfident_model() -> None:
    rng = np.random.default_rng(42)
    reference_confidences, reference_correct = _overconfident(20000, rng)
    live_confidences, live_correct = _overconfident(20000, rng)
    true_accuracy = float(live_correct.mean())
    calibration = fit_isotonic(reference_confidences, reference_correct)

    calibrated = expected_accuracy(live_confidences, calibration)
    raw = expected_accuracy(live_confidences, None)
    assert abs(calibrated - true_accuracy) < 0.02
    assert abs(raw - true_accuracy) > 0.1
    # The calibration learnt the true curve: c**3 at a few points.
    np.testing.assert_allclose(calibration.apply([0.5, 0.7, 0.9]), np.array([0.5, 0.7, 0.9]) ** 3, atol=0.05)


def test_expected_accuracy_of_nothing_is_nan() -> None:
    assert math.isnan(expected_accuracy([], None))
    assert math.isnan(expected_accuracy(np.array([np.nan]), Calibration((0.5,), (0.5,))))
    assert expected_accuracy([0.2, np.nan, 0.4], None) == pytest.approx(0.3)
    assert expected_accuracy([0.2, 0.4], Calibration((0.0, 1.0), (0.5, 1.0))) == pytest.approx(0.65)


def test_dict_round_trip() -> None:
    rng = np.random.default_rng(1)
    calibration = fit_isotonic(*_overconfident(1000, rng))
    data = calibration.to_dict()
    assert set(data) == {"thresholds", "values"}
    assert all(type(v) is float for v in data["thresholds"] + data["values"])
    assert Calibration.from_dict(json.loads(json.dumps(data))) == calibration


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"thresholds": [0.1, 0.2]}, "missing 'values'"),
        ({"values": [0.1, 0.2]}, "missing 'thresholds'"),
        ({"thresholds": [0.1, 0.2], "values": [0.5]}, "2 thresholds but 1 values"),
        ({"thresholds": [], "values": []}, "at least one point"),
        ({"thresholds": [0.2, 0.1], "values": [0.1, 0.2]}, "strictly increasing"),
        ({"thresholds": [0.1, 0.1], "values": [0.1, 0.2]}, "strictly increasing"),
        ({"thresholds": [0.1, math.inf], "values": [0.1, 0.2]}, "finite"),
        ({"thresholds": [0.1, 0.2], "values": [0.3, 0.2]}, "non-decreasing"),
        ({"thresholds": [0.1, 0.2], "values": [0.3, 1.5]}, r"\[0, 1\]"),
        ({"thresholds": [0.1, 0.2], "values": [-0.1, 0.5]}, r"\[0, 1\]"),
        ({"thresholds": [0.1, 0.2], "values": [0.1, math.nan]}, r"\[0, 1\]"),
        ({"thresholds": 3, "values": [0.1]}, "lists of numbers"),
        ({"thresholds": [None], "values": [0.1]}, "lists of numbers"),
    ],
)
def test_from_dict_validates(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(data)
