"""The rollout guard's judgement: a candidate's figures against the stable version's, by the guard's margins, and
where a canary stands on its promotion steps."""

from __future__ import annotations

import math

from vigil.server.models.rollout_config import GuardConfig, RolloutConfig
from vigil.telemetry.quality.comparison import VersionFigures

DEFAULT_WINDOW_SECONDS = 300.0
"""The comparison window of a rollout without a guard."""


def window_of(config: RolloutConfig) -> float:
    return config.guard.window_seconds if config.guard is not None else DEFAULT_WINDOW_SECONDS


def promotion_step(config: RolloutConfig) -> int:
    """Index of the largest promotion step at or below the canary's share; -1 below the first."""
    if config.promotion is None:
        return -1
    share = config.shares[config.canaries[0]]
    return sum(1 for s in config.promotion.steps if s <= share + 1e-9) - 1


def find_breaches(guard: GuardConfig, stable: VersionFigures, candidate: VersionFigures, *, shadow: bool
              ) -> list[str]:
    """The guard margins `candidate` exceeds against `stable`, as text."""
    found = []
    if guard.max_error_ratio_increase is not None:
        increase = candidate.error_ratio - stable.error_ratio
        if increase > guard.max_error_ratio_increase:
            found.append(f"error ratio {candidate.error_ratio:.4g} vs {stable.error_ratio:.4g} "
                         f"(+{increase:.4g} > {guard.max_error_ratio_increase:g})")
    if guard.max_p99_ratio is not None and not shadow and stable.requests and candidate.requests:
        if stable.p99_seconds > 0 and math.isfinite(candidate.p99_seconds):
            ratio = candidate.p99_seconds / stable.p99_seconds
            if ratio > guard.max_p99_ratio:
                found.append(f"p99 {candidate.p99_seconds * 1e3:.4g} ms vs {stable.p99_seconds * 1e3:.4g} ms "
                             f"(x{ratio:.3g} > {guard.max_p99_ratio:g})")
    if (guard.max_accuracy_drop is not None and candidate.accuracy is not None and stable.accuracy is not None
            and min(candidate.labelled_rows, stable.labelled_rows) >= guard.min_labelled_rows):
        drop = stable.accuracy - candidate.accuracy
        if drop > guard.max_accuracy_drop:
            found.append(f"accuracy {candidate.accuracy:.4g} vs {stable.accuracy:.4g} "
                         f"(-{drop:.4g} > {guard.max_accuracy_drop:g})")
    if guard.max_disagreement is not None and shadow and candidate.agreement is not None:
        disagreement = 1.0 - candidate.agreement
        if disagreement > guard.max_disagreement:
            found.append(f"disagreement {disagreement:.4g} > {guard.max_disagreement:g}")
    return found
