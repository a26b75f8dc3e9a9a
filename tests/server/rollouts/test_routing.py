"""Rollout configs and the weighted pick: shares, sticky keys, and what a config may not say."""

from __future__ import annotations

import collections

import pytest
from pydantic import ValidationError

from vigil.server.models.rollout_config import GuardConfig, PromotionConfig, RolloutConfig
from vigil.server.rollouts.routing import Split


def test_random_picks_follow_the_weights() -> None:
    split = Split.of("m", {1: 70.0, 2: 20.0, 3: 10.0}, stable=1)
    picks = collections.Counter(split.choose() for _ in range(20_000))
    for version, share in ((1, 0.7), (2, 0.2), (3, 0.1)):
        expected = 20_000 * share
        sd = (20_000 * share * (1 - share)) ** 0.5
        assert abs(picks[version] - expected) < 5 * sd, picks


def test_a_sticky_key_always_lands_on_the_same_version_and_keys_spread_by_weight() -> None:
    split = Split.of("m", {1: 90.0, 2: 10.0}, stable=1, sticky_key="x-patient")
    keys = [f"patient-{i}" for i in range(5000)]
    first = {k: split.choose(k) for k in keys}
    assert all(split.choose(k) == first[k] for k in keys for _ in range(3))
    canary = sum(v == 2 for v in first.values())
    assert abs(canary - 500) < 5 * (5000 * 0.1 * 0.9) ** 0.5
    # another model hashes the same keys independently
    other = Split.of("n", {1: 90.0, 2: 10.0}, stable=1)
    assert sum(first[k] != other.choose(k) for k in keys) > 300


def test_as_a_canary_grows_its_keys_stay_with_it() -> None:
    keys = [f"k{i}" for i in range(3000)]
    small = Split.of("m", {1: 90.0, 2: 10.0}, stable=1)
    large = Split.of("m", {1: 50.0, 2: 50.0}, stable=1)
    on_canary = [k for k in keys if small.choose(k) == 2]
    assert on_canary and all(large.choose(k) == 2 for k in on_canary)


def test_metadata_key_is_read_only_when_sticky() -> None:
    sticky = Split.of("m", {1: 1.0}, stable=1, sticky_key="x-user")
    assert sticky.key_of(lambda: [("other", "a"), ("x-user", "u1")]) == "u1"
    assert sticky.key_of(lambda: [("other", "a")]) is None
    calls = []
    Split.of("m", {1: 1.0}, stable=1).key_of(lambda: calls.append(1) or [])
    assert calls == []


def test_a_version_with_no_weight_gets_nothing() -> None:
    split = Split.of("m", {1: 100.0, 2: 0.0}, stable=1)
    assert {split.choose() for _ in range(1000)} == {1}


@pytest.mark.parametrize(("data", "fragment"), [
    ({"weights": {}}, "at least 1"),
    ({"weights": {1: 0}}, "above 0"),
    ({"weights": {1: -1, 2: 5}}, "not negative"),
    ({"weights": {0: 1}}, "numbers from 1"),
    ({"weights": {1: 1}, "stable": 2}, "stable version 2"),
    ({"weights": {1: 1, 2: 1}, "shadow": 2}, "must not also take a share"),
    ({"weights": {1: 1}, "sticky_key": "X-Upper"}, "metadata key"),
    ({"weights": {1: 1}, "sticky_key": "key-bin"}, "metadata key"),
    ({"weights": {1: 1, 2: 1, 3: 1}, "promotion": {"steps": [50, 100]}, "guard": {"max_p99_ratio": 2}},
     "exactly one canary"),
    ({"weights": {1: 1}, "guard": {"max_p99_ratio": 2}}, "needs a candidate"),
])
def test_bad_rollouts_are_refused_with_the_reason(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        RolloutConfig.model_validate(data)
    assert fragment in str(info.value)


def test_guard_and_promotion_check_their_own_fields() -> None:
    with pytest.raises(ValidationError, match="at least one margin"):
        GuardConfig()
    with pytest.raises(ValidationError, match="end at 100"):
        PromotionConfig(steps=[10, 50])
    with pytest.raises(ValidationError, match="ascending"):
        PromotionConfig(steps=[50, 10, 100])


def test_stable_defaults_to_the_largest_weight_and_shares_are_percent() -> None:
    config = RolloutConfig(weights={1: 1, 2: 3})
    assert config.stable_version == 2
    assert config.canaries == [1]
    assert config.shares == {1: 25.0, 2: 75.0}
    assert RolloutConfig(weights={1: 1, 2: 1}).stable_version == 1


def test_each_guard_margin_is_judged_against_the_stable_version() -> None:
    from vigil.server.models.rollout_config import GuardConfig
    from vigil.server.rollouts.guard import find_breaches as _breaches
    from vigil.telemetry.quality.comparison import VersionFigures

    guard = GuardConfig(min_labelled_rows=10, max_error_ratio_increase=0.02, max_p99_ratio=1.5,
                        max_accuracy_drop=0.05, max_disagreement=0.1)
    stable = VersionFigures("1", requests=1000, errors=10, p99_seconds=0.010, accuracy=0.95, labelled_rows=200)
    healthy = VersionFigures("2", requests=100, errors=2, p99_seconds=0.014, accuracy=0.93, labelled_rows=20)
    assert _breaches(guard, stable, healthy, shadow=False) == []
    worse = VersionFigures("2", requests=100, errors=5, p99_seconds=0.020, accuracy=0.85, labelled_rows=20)
    found = _breaches(guard, stable, worse, shadow=False)
    assert [f.split()[0] for f in found] == ["error", "p99", "accuracy"], found
    assert "+0.04 > 0.02" in found[0] and "x2 > 1.5" in found[1] and "-0.1 > 0.05" in found[2]
    # too few labelled rows: accuracy is not compared
    unlabelled = VersionFigures("2", requests=100, accuracy=0.5, labelled_rows=9)
    assert _breaches(guard, stable, unlabelled, shadow=False) == []
    # a shadow: disagreement counts, its run time is not compared with request latency
    shadow = VersionFigures("3", requests=100, p99_seconds=1.0, compared_rows=100, agreed_rows=85)
    assert _breaches(guard, stable, shadow, shadow=True) == ["disagreement 0.15 > 0.1"]
    assert _breaches(guard, stable, VersionFigures("3", requests=100, compared_rows=100, agreed_rows=95),
                     shadow=True) == []
