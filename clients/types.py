"""What the client returns: plain dataclasses with numpy arrays, never protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Prediction:
    """The answer to one Predict: outputs by name, and for classifiers each row's label and probability."""

    request_id: str
    model_name: str
    model_version: int
    outputs: dict[str, npt.NDArray[np.generic]]
    labels: list[str] = field(default_factory=list)
    probabilities: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    server_timing: dict[str, float] = field(default_factory=dict)
    """Seconds per server stage, from the response's trailing metadata when the server sends it."""

    def __getitem__(self, name: str) -> npt.NDArray[np.generic]:
        return self.outputs[name]


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: dtype name (e.g. ``FP32``) and shape (-1 for dynamic dimensions)."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """A model version's metadata."""

    name: str
    version: int
    versions: list[int]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    max_batch_size: int
    execution_providers: list[str]
    labels: list[str]
    probability_output: str
    state: str
    reason: str


@dataclass(frozen=True)
class VersionInfo:
    """One version of a model: its state (LOADING, READY, FAILED, UNLOADED), why when it is not READY, and the
    ONNX Runtime providers really running it."""

    version: int
    state: str
    reason: str
    execution_providers: list[str]


@dataclass(frozen=True)
class ModelSummary:
    """One model in ListModels: the version requests go to by default, and every version's state."""

    name: str
    default_version: int
    versions: list[VersionInfo]
    reason: str


@dataclass(frozen=True)
class Erasure:
    """What the server erased of a subject."""

    predictions: int
    """Logged predictions removed (shadow copies included)."""
    outcomes: int
    """Of those, the ones that had labels."""


@dataclass(frozen=True)
class FeedbackReceipt:
    """What a feedback item was joined to."""

    request_id: str
    model_name: str
    model_version: int
    predicted_labels: list[str]
    """What the model predicted for each row."""
    replaced: bool
    """True when earlier feedback for this id was replaced."""


@dataclass(frozen=True)
class RolloutGuard:
    """Automatic rollback: margins a canary or shadow may not exceed against the stable version (None: unchecked),
    for `for_seconds`, with at least `min_requests` in the `window_seconds` compared."""

    window_seconds: float = 300.0
    for_seconds: float = 60.0
    min_requests: int = 100
    min_labelled_rows: int = 50
    max_error_ratio_increase: float | None = None
    max_p99_ratio: float | None = None
    max_accuracy_drop: float | None = None
    max_disagreement: float | None = None


@dataclass(frozen=True)
class RolloutPromotion:
    """Canary weights in percent to step through while the guard holds, ending at 100."""

    steps: list[float]
    hold_seconds: float = 600.0


@dataclass(frozen=True)
class Rollout:
    """How requests that name no version are split: version → weight, a stable baseline (0: the largest weight),
    a shadow version that gets copies (0: none), a sticky metadata key, and optional guard and promotion."""

    weights: dict[int, float]
    stable_version: int = 0
    shadow_version: int = 0
    sticky_key: str = ""
    guard: RolloutGuard | None = None
    promotion: RolloutPromotion | None = None


@dataclass(frozen=True)
class RolloutInfo:
    """A model's rollout in force (None: requests without a version go to the default version)."""

    model_name: str
    rollout: Rollout | None
    phase: str
    """none, split, shadow, canary, promoting, promoted or rolled_back."""
    reason: str
    changed_unix_nanos: int
    step: int
