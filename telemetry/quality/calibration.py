"""Confidence calibration and label-free accuracy estimation.

On reference data with labels, `fit_isotonic` maps the model's top-class confidence to the probability that the
prediction is correct (isotonic regression). On live data without labels, the expected accuracy is then the mean
calibrated confidence (`expected_accuracy`), the confidence-based performance estimate NannyML calls CBPE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Calibration:
    """A non-decreasing piecewise-linear map from confidence to the probability of being correct.

    `thresholds` are strictly increasing confidences and `values` the probabilities at them, non-decreasing and
    in [0, 1]. Between thresholds the map interpolates linearly; outside them it is constant at the end values.
    """

    thresholds: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        _validate(self.thresholds, self.values)

    def apply(self, confidences: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The calibrated probabilities for `confidences` (same shape; NaN stays NaN)."""
        x = np.asarray(confidences, dtype=np.float64)
        return np.interp(x, self.thresholds, self.values).astype(np.float64, copy=False)

    def to_dict(self) -> dict[str, list[float]]:
        """A JSON-ready form: {"thresholds": [...], "values": [...]}."""
        return {"thresholds": list(self.thresholds), "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """The calibration `to_dict` wrote; ValueError when it is missing a key or is not a valid calibration."""
        try:
            thresholds, values = data["thresholds"], data["values"]
        except KeyError as exc:
            raise ValueError(f"calibration is missing {exc.args[0]!r}") from None
        try:
            return cls(tuple(float(t) for t in thresholds), tuple(float(v) for v in values))
        except TypeError as exc:
            raise ValueError(f"calibration thresholds and values must be lists of numbers: {exc}") from None


def _validate(thresholds: tuple[float, ...], values: tuple[float, ...]) -> None:
    if len(thresholds) != len(values):
        raise ValueError(f"calibration has {len(thresholds)} thresholds but {len(values)} values")
    if not thresholds:
        raise ValueError("calibration needs at least one point")
    if not all(math.isfinite(t) for t in thresholds):
        raise ValueError("calibration thresholds must be finite")
    if any(b <= a for a, b in zip(thresholds, thresholds[1:], strict=False)):
        raise ValueError("calibration thresholds must be strictly increasing")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError("calibration values must lie in [0, 1]")
    if any(b < a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError("calibration values must be non-decreasing")


def _pool_adjacent_violators(y: list[float], w: list[float]) -> list[float]:
    """The non-decreasing sequence nearest to `y` in weighted least squares (weights > 0)."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(y, w, strict=True):
        mean, total, size = value, weight, 1
        while means and means[-1] > mean:
            previous_weight = weights.pop()
            combined = previous_weight + total
            mean = (means.pop() * previous_weight + mean * total) / combined
            total = combined
            size += sizes.pop()
        means.append(mean)
        weights.append(total)
        sizes.append(size)
    fitted: list[float] = []
    for mean, size in zip(means, sizes, strict=True):
        fitted.extend([mean] * size)
    return fitted


def fit_isotonic(confidences: npt.ArrayLike, correct: npt.ArrayLike) -> Calibration:
    """The isotonic (non-decreasing, least-squares) regression of `correct` on `confidences`.

    `correct` holds 0/1 or booleans (any values in [0, 1] are accepted). Equal confidences are pooled first
    into one point at the mean of their targets, then the pool-adjacent-violators algorithm fits the targets and
    the fit is clipped to [0, 1]. Only the first and last point of each constant stretch are kept, which does
    not change the interpolation. Raises ValueError when the inputs are empty, differ in length, or hold a
    non-finite confidence or a target outside [0, 1].
    """
    x = np.asarray(confidences, dtype=np.float64).reshape(-1)
    y = np.asarray(correct, dtype=np.float64).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"{x.size} confidences but {y.size} correctness values")
    if x.size == 0:
        raise ValueError("cannot calibrate on no data")
    if not np.all(np.isfinite(x)):
        raise ValueError("confidences must be finite")
    if not (np.all(y >= 0) and np.all(y <= 1)):
        raise ValueError("correctness values must lie in [0, 1]")

    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    unique_x, starts, counts = np.unique(x, return_index=True, return_counts=True)
    mean_y = np.add.reduceat(y, starts) / counts
    fitted = np.clip(_pool_adjacent_violators(mean_y.tolist(), counts.astype(np.float64).tolist()), 0.0, 1.0)

    keep = np.ones(fitted.size, dtype=bool)
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return Calibration(tuple(unique_x[keep].tolist()), tuple(fitted[keep].tolist()))


def expected_accuracy(confidences: npt.ArrayLike, calibration: Calibration | None) -> float:
    """The expected accuracy of predictions made with these top-class confidences: their mean calibrated value.

    Without a calibration the raw confidences are averaged, which is right only for a calibrated model. NaNs
    are ignored; NaN when no confidences remain.
    """
    x = np.asarray(confidences, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan")
    probabilities = x if calibration is None else calibration.apply(x)
    return float(np.mean(probabilities))
