"""Rollouts: per model, the traffic split in force, how requests are routed by it, and the guard that rolls a
worse canary or shadow back and promotes a healthy canary step by step.

A split comes from the model's `config.toml` (`[rollout]`, applied whenever the model's config changes it) or
from `SetRollout` at run time; the later one is in force. Routing reads one immutable plan per model, replaced in
one assignment, so a change never drops or stalls a request. Requests that name a version bypass the split.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.errors import InvalidInput
from vigil.server.models.repository import Model, ModelRepository, ModelVersion
from vigil.server.models.rollout_config import RolloutConfig
from vigil.server.rollouts.guard import find_breaches, promotion_step, window_of
from vigil.server.rollouts.routing import Metadata, Split
from vigil.telemetry.calls.context import annotate_call
from vigil.telemetry.quality.comparison import Comparer, VersionFigures

logger = logging.getLogger(__name__)

Kind = telemetry_pb2.TelemetryEvent.Kind
Publish = Callable[[int, str, str, str], None]
"""(event kind, model, version, message): how rollout changes reach the Telemetry stream."""


@dataclass
class RolloutState:
    """One model's rollout: as configured, as in force after rollbacks and promotion steps, and how it got there."""

    model: str
    origin: str
    """"config" (config.toml) or "api" (SetRollout)."""
    config: RolloutConfig
    """In force: a rolled-back canary has weight 0, a promoted one its step's weight."""
    reason: str
    changed_ns: int
    step: int = -1
    promoted: bool = False
    rolled_back: dict[int, str] = field(default_factory=dict)
    """Version → why it was rolled back."""
    breach_since: dict[int, float] = field(default_factory=dict)
    hold_since: float | None = None
    comparison: telemetry_pb2.RolloutTelemetry | None = None
    configured: RolloutConfig | None = None
    """As set (config.toml or SetRollout), before any rollback or promotion step."""
    revision: str = ""
    """Names this state among the fleet's members: a change anywhere makes a new one."""

    def shared(self) -> dict[str, Any]:
        """The state as the fleet's members share it."""
        return {"revision": self.revision, "origin": self.origin, "reason": self.reason, "changed_ns": self.changed_ns,
                "step": self.step, "promoted": self.promoted,
                "rolled_back": {str(v): why for v, why in self.rolled_back.items()},
                "config": self.config.model_dump(mode="json"),
                "configured": self.configured.model_dump(mode="json") if self.configured is not None else None}

    @classmethod
    def from_shared(cls, model: str, data: dict[str, Any]) -> RolloutState:
        configured = data.get("configured")
        return cls(model, data["origin"], RolloutConfig.model_validate(data["config"]), data["reason"],
                   int(data["changed_ns"]), step=int(data["step"]), promoted=bool(data["promoted"]),
                   rolled_back={int(v): why for v, why in data["rolled_back"].items()},
                   configured=RolloutConfig.model_validate(configured) if configured is not None else None,
                   revision=data["revision"])

    @property
    def phase(self) -> str:
        config = self.config
        if self.rolled_back:
            return "rolled_back"
        if self.promoted:
            return "promoted"
        if config.promotion is not None:
            return "promoting"
        active = [v for v in config.canaries if config.weights[v] > 0]
        if active and config.guard is not None:
            return "canary"
        if config.shadow and not active:
            return "shadow"
        return "split"

    def role(self, version: int) -> str:
        config = self.config
        if version == config.shadow or version not in config.weights:  # the shadow, or one rolled back
            return "shadow"
        if version == config.stable_version:
            return "stable"
        return "canary" if config.guard is not None or config.promotion is not None else "variant"

    def candidates(self) -> list[int]:
        """Versions the guard judges: canaries with a share, and the shadow."""
        config = self.config
        out = [v for v in config.canaries if config.weights[v] > 0]
        return out + ([config.shadow] if config.shadow else [])


def _split(model: str, config: RolloutConfig) -> Split:
    return Split.of(model, config.weights, stable=config.stable_version, shadow=config.shadow,
                    sticky_key=config.sticky_key)


class Rollouts:
    """Every model's rollout, and the routing of requests that name no version.

    >>> rollouts = Rollouts(repository, comparer=comparer, publish=hub_publish)
    >>> rollouts.set("m", RolloutConfig(weights={1: 90, 2: 10}))
    >>> served, shadow = rollouts.resolve("m", 0, context.invocation_metadata)
    """

    def __init__(self, repository: ModelRepository, *, comparer: Comparer | None = None,
                 publish: Publish | None = None) -> None:
        self._repository = repository
        self.comparer = comparer
        """Reads the figures the guard judges and the stream shows; without it, rollouts only route."""
        self.publish = publish
        self._states: dict[str, RolloutState] = {}
        self._splits: dict[str, Split] = {}
        """The routing plans, by model: the only thing the request path reads."""
        self._from_config: dict[str, RolloutConfig | None] = {}
        self._task: asyncio.Task[None] | None = None
        self.member = ""
        """This process's id in its fleet, in the revisions of the states it makes."""
        self.leading: Callable[[], bool] = lambda: True
        """Whether this process guards the rollouts (the fleet's leader does, for every member)."""
        self.unshared: dict[str, dict[str, Any] | None] = {}
        """States changed here that the fleet has not been told of yet (None: cleared), by model."""
        self._adopted: dict[str, str] = {}
        """The revision of each model's state as the fleet last shared it."""
        self._fleet_states: dict[str, dict[str, Any] | None] = {}
        """Each model's state as the fleet last shared it (also of models not loaded here yet)."""

    # -- the request path ---------------------------------------------------------------------------------------

    def splits(self, name: str) -> bool:
        """Whether requests for model `name` without a version are split by a rollout (each drawn on its own)."""
        return name in self._splits

    def resolve(self, name: str, number: int, metadata: Metadata | None = None
                ) -> tuple[ModelVersion, ModelVersion | None]:
        """(the version that answers, a shadow version that gets a copy or None). A chosen version that is not
        ready sends the request to the stable version (or the default one) instead."""
        split = self._splits.get(name) if number == 0 else None
        if split is None:
            return self._repository.resolve(name, number), None
        model = self._repository.get(name)
        chosen = model.versions.get(split.choose(split.key_of(metadata)))
        if chosen is None or not chosen.is_ready:
            stable = model.versions.get(split.versions[-1])
            chosen = stable if stable is not None and stable.is_ready else model.resolve(0)
        shadow = model.versions.get(split.shadow) if split.shadow else None
        if shadow is not None and (not shadow.is_ready or shadow is chosen):
            shadow = None
        return chosen, shadow

    # -- setting and reading ------------------------------------------------------------------------------------

    def get(self, name: str) -> RolloutState | None:
        """The model's rollout, or None; ModelNotFound for a model not in the repository."""
        self._repository.get(name)
        return self._states.get(name)

    def set(self, name: str, config: RolloutConfig | None, *, origin: str = "api") -> RolloutState | None:
        """Put `config` in force for model `name` (None clears it); InvalidInput when it names versions the
        model does not have."""
        if not name:
            raise InvalidInput("model_name is empty; name the model whose rollout to set")
        model = self._repository.get(name)
        annotate_call(model=name)
        if config is None:
            old = self._states.pop(name, None)
            self._splits.pop(name, None)
            if old is not None:
                self.unshared[name] = {"revision": self._revision(), "cleared": True,
                                       "from_config": _as_data(self._from_config.get(name))}
                self._event(Kind.ROLLOUT_CHANGED, name, "", f"rollout cleared ({origin}); requests without a "
                                                              "version go to the default version")
            return None
        missing = [v for v in config.versions() if v not in model.versions]
        if missing:
            known = ", ".join(str(v) for v in sorted(model.versions)) or "none"
            raise InvalidInput(f"model '{name}' has no version {', '.join(map(str, missing))} for its rollout "
                               f"(versions: {known})")
        state = RolloutState(name, origin, config, f"set ({origin})", time.time_ns(), step=promotion_step(config),
                             configured=config)
        self._states[name] = state
        self._splits[name] = _split(name, config)
        self._share(state)
        if self.comparer is not None:  # the comparison window starts now
            self._observe(self.comparer, time.time())
        shares = ", ".join(f"{v}: {s:.4g}%" for v, s in config.shares.items())
        shadow = f", shadow {config.shadow}" if config.shadow else ""
        self._event(Kind.ROLLOUT_CHANGED, name, "", f"rollout set ({origin}): {shares}{shadow}")
        logger.info("model %s rollout set (%s): %s%s", name, origin, shares, shadow)
        return state

    async def on_model_change(self, model: Model) -> None:
        """Apply the `[rollout]` of the model's config whenever it differs from the one last applied."""
        rollout = model.config.rollout if model.config is not None else None
        if model.name in self._from_config and self._from_config[model.name] == rollout:
            return
        if model.name not in self._from_config and rollout is None:
            self._from_config[model.name] = None
            return
        self._from_config[model.name] = rollout
        current = self._states.get(model.name)
        if rollout is None and (current is None or current.origin != "config"):
            return
        if current is not None and current.origin == "config" and current.configured == rollout:
            return  # the fleet already runs this config's rollout (perhaps rolled back or promoted since)
        known = self._fleet_states.get(model.name)
        if known is not None and known.get("from_config", "") == _as_data(rollout):
            # the fleet's state grew from this same config (set, changed through the API, rolled back, promoted
            # or cleared since): take it as it is; only a changed config.toml puts its rollout in force again
            if current is None or current.revision != known.get("revision"):
                self._adopted.pop(model.name, None)
                self.adopt({model.name: known})
            return
        try:
            self.set(model.name, rollout, origin="config")
        except InvalidInput as exc:
            logger.error("model %s: the rollout in config.toml is not applied: %s", model.name, exc)

    # -- readings for metrics and alerts ------------------------------------------------------------------------

    def weight_readings(self) -> list[tuple[dict[str, str], float]]:
        """Per version in a rollout: its share of the split in percent (a shadow: 100, the share copied)."""
        out = []
        for name, state in sorted(self._states.items()):
            for version, share in state.config.shares.items():
                out.append(({"model": name, "version": str(version), "role": state.role(version)}, share))
            if state.config.shadow:
                out.append(({"model": name, "version": str(state.config.shadow), "role": "shadow"}, 100.0))
        return out

    def rolled_back_readings(self) -> list[tuple[dict[str, str], float]]:
        """Per version a rollout names: 1 while its guard has it rolled back (until a new rollout is set), else 0
        (the VigilCanaryRolledBack alert's signal)."""
        out = []
        for name, state in sorted(self._states.items()):
            for version in sorted({*state.config.versions(), *state.rolled_back}):
                out.append(({"model": name, "version": str(version)}, 1.0 if version in state.rolled_back else 0.0))
        return out

    def telemetry(self) -> list[telemetry_pb2.RolloutTelemetry]:
        """The latest comparison of every rollout, for the Telemetry stream."""
        return [s.comparison for _, s in sorted(self._states.items()) if s.comparison is not None]

    # -- the guard ----------------------------------------------------------------------------------------------

    def evaluate(self, now: float) -> None:
        """Compare each rollout's versions over its window; roll back, promote, and refresh the comparisons."""
        comparer = self.comparer
        if comparer is None or not self._states:
            return
        self._observe(comparer, now)
        for name, state in list(self._states.items()):
            try:
                self._evaluate(name, state, comparer, now)
            except Exception:
                logger.exception("evaluating the rollout of model %s failed", name)

    def _observe(self, comparer: Comparer, now: float) -> None:
        """A reading of the models with a rollout, kept as long as the longest of their windows (a failed reading
        is logged: the guard judges on the readings it has)."""
        try:
            comparer.history_seconds = max(window_of(s.config) for s in self._states.values())
            comparer.observe(now, self._states)
        except Exception:
            logger.exception("reading the figures rollouts are judged on failed")

    def _evaluate(self, name: str, state: RolloutState, comparer: Comparer, now: float) -> None:
        config = state.config
        guard = config.guard
        window = window_of(config)
        stable = config.stable_version
        figures = {v: comparer.figures(name, str(v), shadow=state.role(v) == "shadow", window=window)
                   for v in sorted({*config.weights, *state.rolled_back, *([config.shadow] if config.shadow else [])})}
        breaches: dict[int, list[str]] = {}
        if guard is not None:
            for version in state.candidates():
                found = find_breaches(guard, figures[stable], figures[version], shadow=version == config.shadow)
                if found and figures[version].requests >= guard.min_requests:
                    breaches[version] = found
        state.comparison = self._comparison(state, figures, breaches, window)
        for version in list(state.breach_since):
            if version not in breaches:
                del state.breach_since[version]
        for version, found in breaches.items():
            since = state.breach_since.setdefault(version, now)
            if guard is not None and now - since >= guard.for_seconds:
                self._roll_back(state, version, found, figures[version], now - since)
                return
        self._promote_if_held(state, figures, bool(breaches), now)

    def _comparison(self, state: RolloutState, figures: dict[int, VersionFigures], breaches: dict[int, list[str]],
                    window: float) -> telemetry_pb2.RolloutTelemetry:
        shares = state.config.shares
        out = telemetry_pb2.RolloutTelemetry(model=state.model, phase=state.phase,
                                             stable=str(state.config.stable_version), window_seconds=window,
                                             reason=state.reason, step=state.step)
        for version, f in figures.items():
            entry = out.versions.add(
                version=str(version), role=state.role(version), weight=shares.get(version, 0.0),
                requests=f.requests, errors=f.errors, error_ratio=f.error_ratio,
                p50_ms=_ms(f.p50_seconds), p99_ms=_ms(f.p99_seconds), drift_status=f.drift_status,
                labelled_rows=f.labelled_rows, compared_rows=f.compared_rows, breaches=breaches.get(version, []))
            entry.predictions.update(f.predictions)
            for name, value in (("mean_confidence", f.mean_confidence), ("drift_score", f.drift_score),
                                ("accuracy", f.accuracy), ("agreement", f.agreement)):
                if value is not None:
                    setattr(entry, name, value)
        return out

    def _roll_back(self, state: RolloutState, version: int, found: list[str], figures: VersionFigures,
                   held: float) -> None:
        config = state.config
        role = "shadow" if version == config.shadow else "canary"
        why = f"{'; '.join(found)} for {held:.0f}s over {figures.requests} requests"
        if role == "shadow":
            changed = config.model_copy(update={"shadow": 0})
        else:
            changed = config.model_copy(update={"weights": {**config.weights, version: 0.0}, "promotion": None})
        self._put(state, changed)
        state.rolled_back[version] = why
        state.breach_since.clear()
        state.hold_since = None
        state.reason = f"{role} version {version} rolled back: {why}"
        state.changed_ns = time.time_ns()
        self._share(state)
        logger.warning("model %s: %s", state.model, state.reason)
        self._event(Kind.ROLLOUT_ROLLED_BACK, state.model, str(version), state.reason)

    def _promote_if_held(self, state: RolloutState, figures: dict[int, VersionFigures], breaching: bool,
                         now: float) -> None:
        config = state.config
        promotion, guard = config.promotion, config.guard
        if promotion is None or guard is None or state.rolled_back or state.promoted:
            return
        if breaching:
            state.hold_since = None
            return
        if state.hold_since is None:
            state.hold_since = now
            return
        canary = config.canaries[0]
        if now - state.hold_since < promotion.hold_seconds or figures[canary].requests < guard.min_requests:
            return
        state.step += 1
        share = promotion.steps[state.step]
        stable = config.stable_version
        if share >= 100:
            changed = RolloutConfig(weights={canary: 100.0}, shadow=config.shadow if config.shadow != canary else 0,
                                    sticky_key=config.sticky_key,
                                    guard=guard if config.shadow and config.shadow != canary else None)
            state.promoted = True
            state.reason = f"version {canary} promoted to stable (was {stable})"
        else:
            changed = config.model_copy(update={"weights": {stable: 100.0 - share, canary: share}})
            state.reason = f"version {canary} promoted to {share:g}% (step {state.step + 1} of {len(promotion.steps)})"
        self._put(state, changed)
        state.hold_since = now
        state.changed_ns = time.time_ns()
        self._share(state)
        logger.info("model %s: %s", state.model, state.reason)
        self._event(Kind.ROLLOUT_PROMOTED, state.model, str(canary), state.reason)

    # -- the fleet ----------------------------------------------------------------------------------------------

    def _revision(self) -> str:
        return f"{time.time_ns()}:{self.member}"

    def _share(self, state: RolloutState) -> None:
        state.revision = self._revision()
        self.unshared[state.model] = {**state.shared(), "from_config": _as_data(self._from_config.get(state.model))}

    def take_unshared(self) -> dict[str, dict[str, Any] | None]:
        """The states to tell the fleet of, once."""
        out, self.unshared = self.unshared, {}
        return out

    def adopt(self, shared: dict[str, dict[str, Any] | None]) -> None:
        """Put in force the states the fleet shares, where another member changed them (every member routes
        alike); states changed here and not yet shared stay."""
        self._fleet_states.update(shared)
        for name, data in shared.items():
            if data is None or name in self.unshared or self._adopted.get(name) == data.get("revision"):
                continue
            if not any(m.name == name for m in self._repository.models):
                continue  # adopted once the model is here
            self._adopted[name] = data["revision"]
            current = self._states.get(name)
            if current is not None and current.revision == data["revision"]:
                continue
            if data.get("cleared"):
                if self._states.pop(name, None) is not None:
                    self._splits.pop(name, None)
                    logger.info("model %s: rollout cleared by another member of the fleet", name)
                continue
            try:
                state = RolloutState.from_shared(name, data)
            except Exception as exc:
                logger.warning("model %s: the fleet's rollout state cannot be read: %s", name, exc)
                continue
            self._states[name] = state
            self._splits[name] = _split(name, state.config)
            if self.comparer is not None:
                self._observe(self.comparer, time.time())
            logger.info("model %s: rollout from the fleet: %s", name, state.reason)

    def _put(self, state: RolloutState, config: RolloutConfig) -> None:
        """Put a changed config in force: its routing plan replaces the old one in one assignment."""
        state.config = config
        self._splits[state.model] = _split(state.model, config)

    def _event(self, kind: int, model: str, version: str,
               message: str) -> None:
        if self.publish is not None:
            self.publish(kind, model, version, message)

    # -- schedule -----------------------------------------------------------------------------------------------

    async def start(self, interval_seconds: float) -> None:
        """Evaluate every `interval_seconds` until `close`."""
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be above 0, got {interval_seconds}")

        async def run() -> None:
            while True:
                await asyncio.sleep(interval_seconds)
                if self.leading():
                    self.evaluate(time.time())

        self._task = asyncio.create_task(run(), name="rollout-guard")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _as_data(config: RolloutConfig | None) -> dict[str, Any] | None:
    return config.model_dump(mode="json") if config is not None else None


def _ms(seconds: float) -> float:
    return seconds * 1e3 if math.isfinite(seconds) else 0.0
