"""Ground truth: a logged prediction, what feedback can go wrong, and the metrics of a window of labelled rows.

Every classifier prediction goes to the server's prediction log under the request id the caller received; feedback
for that id gives each row its true class. Accuracy, per-class precision, recall and F1 and the confusion matrix
are computed from a window's confusion matrix. Subject ids are kept only as a keyed hash.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Classes = npt.NDArray[np.intp]
"""Class indexes, one per row."""


class UnknownPrediction(LookupError):
    """No logged prediction has this id: never logged, or past the retention period (the message says which)."""


class InvalidFeedback(ValueError):
    """Feedback that does not fit its prediction: wrong number of labels, or a label the model does not have."""


def subject_hash(key: bytes, subject: str) -> str:
    """The keyed hash (HMAC-SHA256, hex) under which a subject id is kept and logged."""
    return hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class LoggedPrediction:
    """One served request's prediction as the prediction log keeps it: never its inputs, never a clear subject id."""

    request_id: str
    """The server's id (a shadow copy's ends in the shadow suffix)."""
    at: float
    """Unix seconds the prediction was answered."""
    model: str
    version: str
    shadow: bool
    predicted: Classes
    """Predicted class index per row."""
    top: npt.NDArray[np.float32]
    """Top-class probability per row."""
    probabilities: npt.NDArray[np.float32] | None = None
    """Rows × classes."""
    client_id: str | None = None
    subject_hash: str | None = None


@dataclass(frozen=True)
class WindowMetrics:
    """Accuracy and per-class metrics of a window of labelled rows; `confusion[t, p]` counts rows of true class t
    predicted as p."""

    confusion: npt.NDArray[np.int64]

    @property
    def rows(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float | None:
        rows = self.rows
        return float(np.trace(self.confusion)) / rows if rows else None

    def per_class(self) -> list[tuple[float, float, float, int]]:
        """(precision, recall, F1, support) per class; 0 where a ratio is undefined."""
        right = np.diag(self.confusion).astype(np.float64)
        predicted = self.confusion.sum(axis=0)
        support = self.confusion.sum(axis=1)
        precision = np.divide(right, predicted, out=np.zeros_like(right), where=predicted > 0)
        recall = np.divide(right, support, out=np.zeros_like(right), where=support > 0)
        both = precision + recall
        f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(right), where=both > 0)
        return [(float(p), float(r), float(f), int(s)) for p, r, f, s in zip(precision, recall, f1, support,
                                                                           strict=True)]
