"""`vigil rollout`: show or set how a model's requests that name no version are split between its versions."""

from __future__ import annotations

import json
from typing import Any

import click

from vigil.clients.cli.group import call, client_for, jsonable, main, target_option, timeout_option
from vigil.clients.types import Rollout, RolloutGuard, RolloutInfo, RolloutPromotion


def _weights(text: str) -> dict[int, float]:
    try:
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        return {int(v): float(w) for v, w in pairs}
    except ValueError:
        raise click.BadParameter(f"{text!r} is not VERSION=WEIGHT[,VERSION=WEIGHT...], e.g. 1=90,2=10") from None


def _steps(text: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a list of percentages, e.g. 10,50,100") from None


@main.command()
@click.argument("model")
@click.option("--weights", help="Set the split: VERSION=WEIGHT,... (e.g. 1=90,2=10).")
@click.option("--stable", type=int, default=0, help="The baseline version (default: the largest weight).")
@click.option("--shadow", type=int, default=0, help="A version that gets a copy of each request, never returned.")
@click.option("--sticky-key", default="", help="Request metadata key whose value always picks the same version.")
@click.option("--window", type=float, default=300.0, show_default=True, help="Guard: seconds compared.")
@click.option("--for", "for_seconds", type=float, default=60.0, show_default=True,
              help="Guard: seconds a margin must stay exceeded before the rollback.")
@click.option("--min-requests", type=int, default=100, show_default=True, help="Guard: requests needed to judge.")
@click.option("--max-error-ratio-increase", type=float, help="Guard: largest allowed error-ratio increase.")
@click.option("--max-p99-ratio", type=float, help="Guard: largest allowed p99 ratio to the stable version.")
@click.option("--max-accuracy-drop", type=float, help="Guard: largest allowed accuracy drop (from feedback).")
@click.option("--max-disagreement", type=float, help="Guard: largest allowed shadow disagreement.")
@click.option("--promote", "steps", help="Promotion steps in percent, e.g. 10,50,100 (needs a guard margin).")
@click.option("--hold", type=float, default=600.0, show_default=True, help="Promotion: seconds each step holds.")
@click.option("--clear", is_flag=True, help="Remove the split: requests go to the default version again.")
@target_option
@timeout_option
def rollout(model: str, weights: str | None, stable: int, shadow: int, sticky_key: str, window: float,
            for_seconds: float, min_requests: int, max_error_ratio_increase: float | None,
            max_p99_ratio: float | None, max_accuracy_drop: float | None, max_disagreement: float | None,
            steps: str | None, hold: float, clear: bool, target: str, timeout: float) -> None:
    """Show MODEL's rollout as JSON, or set it with --weights (or remove it with --clear)."""
    margins = {"max_error_ratio_increase": max_error_ratio_increase, "max_p99_ratio": max_p99_ratio,
               "max_accuracy_drop": max_accuracy_drop, "max_disagreement": max_disagreement}
    if clear and weights:
        raise click.UsageError("--clear and --weights exclude each other")
    if not weights and (any(v is not None for v in margins.values()) or steps or shadow or sticky_key or stable):
        raise click.UsageError("give --weights to set a rollout")
    with client_for(target, timeout) as client:
        if clear:
            info: RolloutInfo = call(client.set_rollout, model, None)
        elif weights:
            guard = (RolloutGuard(window_seconds=window, for_seconds=for_seconds, min_requests=min_requests,
                                  max_error_ratio_increase=max_error_ratio_increase, max_p99_ratio=max_p99_ratio,
                                  max_accuracy_drop=max_accuracy_drop, max_disagreement=max_disagreement)
                     if any(v is not None for v in margins.values()) else None)
            promotion = RolloutPromotion(steps=_steps(steps), hold_seconds=hold) if steps else None
            info = call(client.set_rollout, model, Rollout(
                weights=_weights(weights), stable_version=stable, shadow_version=shadow, sticky_key=sticky_key,
                guard=guard, promotion=promotion))
        else:
            info = call(client.get_rollout, model)
    out: Any = jsonable(info)
    click.echo(json.dumps(out, indent=2))
