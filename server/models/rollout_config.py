"""A model's rollout: the `[rollout]` table of its `config.toml`, or what `SetRollout` sets at run time.

```toml
[rollout]
weights = { 1 = 90, 2 = 10 }     # version = weight; requests naming no version are split in proportion
stable = 1                       # the baseline (default: the largest weight)
shadow = 3                       # gets a copy of every request the split serves; its answers are never returned
sticky_key = "x-patient-id"      # request metadata whose value (hashed) always picks the same version

[rollout.guard]                  # automatic rollback of a worse canary or shadow
window_seconds = 300
for_seconds = 60
min_requests = 100
max_error_ratio_increase = 0.01
max_p99_ratio = 1.5
max_accuracy_drop = 0.05
max_disagreement = 0.1

[rollout.promotion]              # step-wise promotion of the one canary while it holds
steps = [10, 50, 100]
hold_seconds = 600
```
"""

from __future__ import annotations

import math
import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

_METADATA_KEY = re.compile(r"^[a-z0-9_.-]+$")


class GuardConfig(BaseModel):
    """When a candidate (canary or shadow) is rolled back: margins over the stable version, held for a while."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_seconds: float = Field(300.0, gt=0, le=86_400)
    """Seconds of traffic each comparison covers."""
    for_seconds: float = Field(60.0, ge=0)
    """Seconds a margin must stay exceeded, at every evaluation, before the rollback."""
    min_requests: int = Field(100, ge=1)
    """Requests the candidate needs in the window before it is judged."""
    min_labelled_rows: int = Field(50, ge=1)
    """Labelled rows (feedback) each version needs before accuracy is compared."""
    max_error_ratio_increase: float | None = Field(None, ge=0, le=1)
    """Largest allowed candidate error ratio minus the stable one's."""
    max_p99_ratio: float | None = Field(None, gt=0)
    """Largest allowed candidate p99 request latency over the stable one's (not checked for a shadow)."""
    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    """Largest allowed stable accuracy minus the candidate's."""
    max_disagreement: float | None = Field(None, ge=0, le=1)
    """Largest allowed share of rows a shadow predicts differently from the served version (shadow only)."""

    @model_validator(mode="after")
    def _some_margin(self) -> GuardConfig:
        if all(m is None for m in (self.max_error_ratio_increase, self.max_p99_ratio, self.max_accuracy_drop,
                                   self.max_disagreement)):
            raise ValueError("a guard needs at least one margin (max_error_ratio_increase, max_p99_ratio, "
                             "max_accuracy_drop or max_disagreement)")
        return self


class PromotionConfig(BaseModel):
    """Canary weights to step through while the guard holds; the last step, 100, makes it the stable version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: list[float] = Field(min_length=1)
    """Canary weights in percent, ascending, ending at 100."""
    hold_seconds: float = Field(600.0, gt=0)
    """Seconds each step must hold before the next."""

    @model_validator(mode="after")
    def _ascending_to_100(self) -> PromotionConfig:
        steps = self.steps
        if any(not 0 < s <= 100 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(f"promotion steps must be ascending percentages in (0, 100], got {steps}")
        if steps[-1] != 100:
            raise ValueError(f"promotion steps must end at 100, got {steps}")
        return self


class RolloutConfig(BaseModel):
    """How requests that name no version are split between a model's versions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: dict[int, float] = Field(min_length=1)
    """Version number → weight (any positive scale)."""
    stable: int = Field(0, ge=0)
    """The baseline version; 0 picks the largest weight (the lowest version number on a tie)."""
    shadow: int = Field(0, ge=0)
    """A version that gets a copy of every request the split serves; 0 for none."""
    sticky_key: str = ""
    """Request metadata key (lower case) whose value picks the version by its hash; empty: random."""
    guard: GuardConfig | None = None
    """Automatic rollback; none when absent."""
    promotion: PromotionConfig | None = None
    """Step-wise promotion of the one canary; none when absent."""

    @model_validator(mode="after")
    def _check(self) -> RolloutConfig:
        weights = self.weights
        if any(v < 1 for v in weights):
            raise ValueError(f"weights name versions (numbers from 1), got {sorted(weights)}")
        if any(not math.isfinite(w) or w < 0 for w in weights.values()):
            raise ValueError("weights must be finite and not negative")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("at least one weight must be above 0")
        if self.stable and weights.get(self.stable, 0) <= 0:
            raise ValueError(f"stable version {self.stable} must have a weight above 0")
        if self.shadow and weights.get(self.shadow, 0) > 0:
            raise ValueError(f"shadow version {self.shadow} must not also take a share of the requests")
        if self.shadow and self.shadow == self.stable:
            raise ValueError("the shadow version cannot be the stable one")
        if self.sticky_key and (not _METADATA_KEY.match(self.sticky_key) or self.sticky_key.endswith("-bin")):
            raise ValueError(f"sticky_key {self.sticky_key!r} is not a text metadata key (lower-case letters, "
                             "digits, '-', '_', '.', not ending in -bin)")
        if self.promotion is not None and len(self.canaries) != 1:
            raise ValueError("promotion needs exactly one canary: one version in weights besides the stable one")
        if self.guard is not None and not self.canaries and not self.shadow:
            raise ValueError("a guard needs a candidate to judge: a canary in weights or a shadow version")
        return self

    @property
    def stable_version(self) -> int:
        """The baseline: `stable`, or the version with the largest weight."""
        if self.stable:
            return self.stable
        return min(self.weights, key=lambda v: (-self.weights[v], v))

    @property
    def canaries(self) -> list[int]:
        """Weighted versions other than the stable one, in version order (listed with weight 0 included)."""
        return sorted(v for v in self.weights if v != self.stable_version)

    @property
    def shares(self) -> dict[int, float]:
        """Each weighted version's share of the split in percent."""
        total = sum(self.weights.values())
        return {v: w * 100.0 / total for v, w in sorted(self.weights.items())}

    def versions(self) -> list[int]:
        """Every version the rollout names."""
        return sorted({*self.weights, *([self.shadow] if self.shadow else [])})
