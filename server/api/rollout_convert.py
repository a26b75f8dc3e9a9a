"""`vigil.v1.Rollout` messages to and from `RolloutConfig`, and a model's rollout as `RolloutStatus`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vigil.protos.vigil.v1 import rollout_pb2 as pb
from vigil.server.errors import InvalidInput
from vigil.server.models.rollout_config import GuardConfig, PromotionConfig, RolloutConfig
from vigil.server.rollouts.splits import RolloutState

_MARGINS = ("max_error_ratio_increase", "max_p99_ratio", "max_accuracy_drop", "max_disagreement")


def to_rollout_config(message: pb.Rollout) -> RolloutConfig:
    """The config a `Rollout` message asks for; InvalidInput says what is wrong with it."""
    data: dict[str, Any] = {"weights": dict(message.weights), "stable": message.stable_version,
                            "shadow": message.shadow_version, "sticky_key": message.sticky_key}
    if message.HasField("guard"):
        g = message.guard
        guard: dict[str, Any] = {name: getattr(g, name) for name in _MARGINS if g.HasField(name)}
        for name, value in (("window_seconds", g.window_seconds), ("for_seconds", g.for_seconds),
                            ("min_requests", g.min_requests), ("min_labelled_rows", g.min_labelled_rows)):
            if value:
                guard[name] = value
        data["guard"] = guard
    if message.HasField("promotion"):
        data["promotion"] = {"steps": list(message.promotion.steps)}
        if message.promotion.hold_seconds:
            data["promotion"]["hold_seconds"] = message.promotion.hold_seconds
    try:
        return RolloutConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'rollout'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"rollout is invalid: {problems}") from None


def to_rollout_message(config: RolloutConfig) -> pb.Rollout:
    message = pb.Rollout(weights=config.weights, stable_version=config.stable_version, shadow_version=config.shadow,
                         sticky_key=config.sticky_key)
    if config.guard is not None:
        message.guard.CopyFrom(_guard_message(config.guard))
    if config.promotion is not None:
        message.promotion.CopyFrom(_promotion_message(config.promotion))
    return message


def _guard_message(guard: GuardConfig) -> pb.RolloutGuard:
    margins = {name: getattr(guard, name) for name in _MARGINS if getattr(guard, name) is not None}
    return pb.RolloutGuard(window_seconds=guard.window_seconds, for_seconds=guard.for_seconds,
                           min_requests=guard.min_requests, min_labelled_rows=guard.min_labelled_rows, **margins)


def _promotion_message(promotion: PromotionConfig) -> pb.RolloutPromotion:
    return pb.RolloutPromotion(steps=promotion.steps, hold_seconds=promotion.hold_seconds)


def to_rollout_status(model: str, state: RolloutState | None) -> pb.RolloutStatus:
    if state is None:
        return pb.RolloutStatus(model_name=model, phase="none", step=-1)
    return pb.RolloutStatus(model_name=model, rollout=to_rollout_message(state.config), phase=state.phase,
                            reason=state.reason, changed_unix_nanos=state.changed_ns, step=state.step)
