"""The values that go into the prediction log and come out of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_STORED_PROBABILITIES = 32
"""Classes up to which a prediction's whole probability vector is logged; beyond it only the top probability."""


@dataclass(frozen=True)
class FeedbackItem:
    """True labels for the prediction an id names (the server's request id or the id its caller chose)."""

    request_id: str
    labels: tuple[str, ...]
    subject_hash: str | None = None
    join_shadow_suffix: str = ""
    """When set, the same labels also go to the shadow copy logged under request id + this suffix."""


@dataclass(frozen=True)
class Joined:
    """What a feedback item was joined to."""

    request_id: str
    model: str
    version: str
    predicted: tuple[str, ...]
    replaced: bool
    correct: int
    """Rows predicted right."""
    shadow: Joined | None = None
    """The same labels joined to the request's shadow copy, when one was logged."""


@dataclass(frozen=True)
class Erased:
    """What an erasure removed."""

    predictions: int
    """Logged predictions (requests) removed."""
    outcomes: int
    """Of those, the ones that had labels."""


class StoreError(Exception):
    """The store cannot be opened or used; the message says why and names the store (never a password)."""


class StoreConflict(StoreError):
    """The database aborted a transaction for a conflict with another (a deadlock); trying again may succeed."""


class SchemaTooNew(StoreError):
    """The store was written by a newer Vigil, whose schema this one does not know."""


def encode_classes(classes: npt.NDArray[np.intp]) -> str:
    """Class indexes as the log keeps them: "1" or "0,2,1"."""
    return ",".join(map(str, classes.tolist()))


def decode_classes(text: str) -> npt.NDArray[np.intp]:
    return np.fromiter(map(int, text.split(",")), np.intp) if text else np.zeros(0, np.intp)
