"""A model version's reference profile: what its inputs and predictions looked like on known-good data.

Stored as `profile.json` in the version's folder. Per numeric feature: quantile bin edges with the reference's
proportion in each bin (for PSI) and a sorted sample (for the Kolmogorov–Smirnov test); the predicted-class mix
(for the chi-square test); with labels, the true-class mix, the reference accuracy and a calibration of the
model's confidence (for the label-free accuracy estimate).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.telemetry.quality.calibration import Calibration, fit_isotonic
from vigil.telemetry.quality.drift import bin_counts, quantile_edges

PROFILE_FILE = "profile.json"
"""File name of a profile inside a model version's folder."""
FORMAT = 1
"""Version of the file's layout."""

Floats = npt.NDArray[np.float64]


class ProfileError(ValueError):
    """A profile file that cannot be read, or does not fit the model it sits beside."""


@dataclass(frozen=True)
class FeatureReference:
    """One numeric feature of the reference data."""

    name: str
    edges: tuple[float, ...]
    """Inner bin edges: bins are (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    proportions: tuple[float, ...]
    """Share of reference rows in each bin (len(edges) + 1 entries)."""
    sample: tuple[float, ...]
    """Sorted reference values (all of them, or a random subset) for the KS test."""

    @property
    def sorted_sample(self) -> Floats:
        return np.asarray(self.sample, np.float64)


@dataclass(frozen=True)
class ReferenceProfile:
    """Everything drift and the label-free estimate compare live traffic with."""

    input: str
    """The model input the features are columns of (a [rows, features] tensor)."""
    features: tuple[FeatureReference, ...]
    labels: tuple[str, ...]
    predicted_prior: tuple[float, ...]
    """Share of reference rows predicted as each class."""
    rows: int
    created: str
    label_prior: tuple[float, ...] | None = None
    """Share of reference rows truly of each class, when the reference had labels."""
    accuracy: float | None = None
    """Accuracy on the reference, when it had labels."""
    calibration: Calibration | None = None
    """P(prediction right | top-class confidence), fitted on the labelled reference."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "input": self.input, "rows": self.rows, "created": self.created,
            "labels": list(self.labels), "predicted_prior": list(self.predicted_prior),
            "label_prior": list(self.label_prior) if self.label_prior is not None else None,
            "accuracy": self.accuracy,
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "features": [{"name": f.name, "edges": list(f.edges), "proportions": list(f.proportions),
                          "sample": list(f.sample)} for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        try:
            if data.get("format") != FORMAT:
                raise ProfileError(f"profile format {data.get('format')!r} is not {FORMAT}")
            features = tuple(
                FeatureReference(str(f["name"]), _floats(f["edges"]), _floats(f["proportions"]),
                                 tuple(sorted(_floats(f["sample"])))) for f in data["features"])
            labels = tuple(str(label) for label in data["labels"])
            profile = cls(
                input=str(data["input"]), features=features, labels=labels,
                predicted_prior=_floats(data["predicted_prior"]), rows=int(data["rows"]),
                created=str(data.get("created", "")),
                label_prior=_floats(data["label_prior"]) if data.get("label_prior") is not None else None,
                accuracy=float(data["accuracy"]) if data.get("accuracy") is not None else None,
                calibration=Calibration.from_dict(data["calibration"]) if data.get("calibration") else None)
        except ProfileError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"profile is malformed: {exc!r}") from exc
        for feature in features:
            if len(feature.proportions) != len(feature.edges) + 1 or not feature.sample:
                raise ProfileError(f"feature {feature.name!r} needs len(edges)+1 proportions and a sample")
        if len(profile.predicted_prior) != len(labels):
            raise ProfileError("predicted_prior needs one share per label")
        return profile

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")


def _floats(values: Sequence[Any]) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ProfileError("profile values must be finite numbers")
    return out


def load_profile(path: Path) -> ReferenceProfile:
    """Read a profile file; ProfileError says what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path.name} does not hold a JSON object")
    return ReferenceProfile.from_dict(data)


def build_profile(
    inputs: npt.ArrayLike, probabilities: npt.ArrayLike, *, labels: Sequence[str], input_name: str,
    feature_names: Sequence[str] | None = None, true_classes: npt.ArrayLike | None = None, bins: int = 10,
    sample_size: int = 1000, seed: int = 0, progress: Callable[[int], None] | None = None,
) -> ReferenceProfile:
    """Profile reference rows: `inputs` [rows, features], the model's `probabilities` [rows, classes] on them, and
    optionally the true class index of each row. `progress` is called with 1 after each feature."""
    x = np.asarray(inputs, np.float64)
    p = np.asarray(probabilities, np.float64)
    if x.ndim != 2 or p.ndim != 2 or len(x) != len(p) or len(x) == 0:
        raise ValueError("inputs and probabilities must be 2-D with the same number of rows (at least one)")
    if p.shape[1] != len(labels):
        raise ValueError(f"probabilities have {p.shape[1]} columns but {len(labels)} labels are given")
    names = list(feature_names) if feature_names is not None else [f"{input_name}[{i}]" for i in range(x.shape[1])]
    if len(names) != x.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x.shape[1]} features")
    rng = np.random.default_rng(seed)
    features = []
    for column, name in enumerate(names):
        values = x[:, column][np.isfinite(x[:, column])]
        if len(values) == 0:
            raise ValueError(f"feature {name!r} has no finite reference values")
        edges = quantile_edges(values, bins)
        counts = bin_counts(values, edges)
        sample = values if len(values) <= sample_size else rng.choice(values, sample_size, replace=False)
        features.append(FeatureReference(name, tuple(float(e) for e in edges),
                                         tuple(float(c) for c in counts / counts.sum()),
                                         tuple(float(v) for v in np.sort(sample))))
        if progress is not None:
            progress(1)
    predicted = p.argmax(axis=1)
    k = len(labels)
    prior = np.bincount(predicted, minlength=k) / len(predicted)
    label_prior = accuracy = calibration = None
    if true_classes is not None:
        true = np.asarray(true_classes, np.intp)
        if true.shape != predicted.shape or true.min() < 0 or true.max() >= k:
            raise ValueError("true_classes needs one class index per row, each below the number of labels")
        label_prior = tuple(float(v) for v in np.bincount(true, minlength=k) / len(true))
        correct = predicted == true
        accuracy = float(correct.mean())
        calibration = fit_isotonic(p.max(axis=1), correct)
    return ReferenceProfile(
        input=input_name, features=tuple(features), labels=tuple(labels),
        predicted_prior=tuple(float(v) for v in prior), rows=len(x),
        created=datetime.now(UTC).isoformat(timespec="seconds"), label_prior=label_prior, accuracy=accuracy,
        calibration=calibration)
