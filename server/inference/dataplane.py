"""The one path every inference request takes, whichever protocol it arrived on."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from vigil.server.batching.records import Arrays, BatchResult
from vigil.server.errors import InferenceFailed, ServerError, status_for
from vigil.server.inference.requests import Classification, InferRequest, InferResult
from vigil.server.inference.validation import Limits, check_inputs, check_outputs
from vigil.server.models.repository import ModelRepository, ModelVersion
from vigil.server.rollouts.routing import Metadata
from vigil.server.rollouts.splits import Rollouts
from vigil.telemetry.calls.context import annotate_call
from vigil.telemetry.calls.shadow_hook import SHADOW_SUFFIX, ShadowOutcome

logger = logging.getLogger(__name__)


ShadowHook = Callable[[ShadowOutcome], None]


class _RandomHex(threading.local):
    """The operating system's random bytes as hex, taken 4 KiB at a time (a system call per request would also
    hand the interpreter lock to other threads); one pool per thread, emptied in a forked child."""

    def __init__(self) -> None:
        self.pool = ""
        self.offset = 0

    def take(self, digits: int) -> str:
        if self.offset + digits > len(self.pool):
            self.pool, self.offset = os.urandom(4096).hex(), 0
        start = self.offset
        self.offset = start + digits
        return self.pool[start : start + digits]

    def empty(self) -> None:
        self.pool, self.offset = "", 0


_random_hex = _RandomHex()
os.register_at_fork(after_in_child=_random_hex.empty)


def new_request_id() -> str:
    """A 128-bit id as 32 hex digits: 48 bits of Unix milliseconds, then 80 random bits (the layout of a UUIDv7,
    without its version bits), so ids sort by time and the prediction log can tell an id past its retention
    period from one never logged."""
    return f"{time.time_ns() // 1_000_000:012x}{_random_hex.take(20)}"


class _Prepared(NamedTuple):
    """A request resolved to a ready version and checked against its signature."""

    request: InferRequest
    request_id: str
    version: ModelVersion
    rows: int
    wanted: tuple[str, ...]
    to_compute: tuple[str, ...]
    shadow: ModelVersion | None = None
    """A version that gets a copy of this request (its rollout's shadow)."""


class DataPlane:
    """Resolves, validates and runs requests; protocol servicers convert to and from it.

    >>> plane = DataPlane(repository, limits)
    >>> result = await plane.infer(InferRequest("breast_cancer", 0, {"features": rows}))
    >>> result.classification.labels
    ['benign']
    """

    def __init__(self, repository: ModelRepository, limits: Limits, *, rollouts: Rollouts | None = None,
                 shadow_hooks: Sequence[ShadowHook] = (), max_shadow_in_flight: int = 256) -> None:
        if max_shadow_in_flight < 0:
            raise ValueError(f"max_shadow_in_flight must be at least 0, got {max_shadow_in_flight}")
        self.repository = repository
        self.limits = limits
        self.rollouts = rollouts or Rollouts(repository)
        self._shadow_hooks = list(shadow_hooks)
        self._max_shadows = max_shadow_in_flight
        self._shadows: set[asyncio.Task[None]] = set()

    def add_shadow_hook(self, hook: ShadowHook) -> None:
        """Call `hook(outcome)` after every shadow run (or skipped copy)."""
        self._shadow_hooks.append(hook)

    def _route(self, request: InferRequest, metadata: Metadata | None) -> tuple[ModelVersion, ModelVersion | None]:
        return self.rollouts.resolve(request.model_name, request.model_version, metadata)

    def _prepare(self, request: InferRequest, request_id: str, version: ModelVersion | None = None,
                 shadow: ModelVersion | None = None, metadata: Metadata | None = None, *,
                 routes: dict[tuple[str, int], tuple[ModelVersion, ModelVersion | None]] | None = None,
                 ) -> _Prepared:
        """Resolve (unless `version` is given; `routes` keeps the routes a BatchPredict call resolved, by name and
        version asked for, unless a rollout splits them) and validate; the call's validation time is annotated for
        a single request only."""
        if version is None:
            if routes is None:
                version, shadow = self._route(request, metadata)
            else:
                asked = (request.model_name, request.model_version)
                route = routes.get(asked)
                if route is None:
                    route = self._route(request, metadata)
                    if asked[1] != 0 or not self.rollouts.splits(asked[0]):  # a split draws per request
                        routes[asked] = route
                version, shadow = route
        started_ns = time.time_ns() if routes is None else 0
        signature = version.signature
        rows = check_inputs(
            version.name, request.inputs, signature,
            batching=version.config.max_batch_size > 0, limits=self.limits,
            nonfinite_inputs=version.config.nonfinite_inputs,
        )
        wanted = check_outputs(version.name, request.output_names, signature)
        probability_output = version.config.probability_output
        to_compute = wanted if probability_output is None or probability_output in wanted else (
            *wanted, probability_output)
        if routes is None:
            annotate_call(validation_ns=(started_ns, time.time_ns()))
        return _Prepared(request, request_id, version, rows, wanted, to_compute, shadow)

    async def infer(
        self, request: InferRequest, *, request_id: str | None = None, deadline: float | None = None,
        metadata: Metadata | None = None,
    ) -> InferResult:
        """Resolve (through the model's rollout when it names no version), validate and run one request.
        `deadline` is a `time.monotonic()` instant, or None; `metadata` the call's, for a sticky rollout."""
        started = time.perf_counter()
        request_id = request_id or new_request_id()
        version, shadow = self._route(request, metadata)
        annotate_call(model=version.name, version=version.version, request_id=request_id)
        try:
            prepared = self._prepare(request, request_id, version, shadow)
            ran = await version.run(request.inputs, prepared.to_compute, rows=prepared.rows,
                                    request_id=prepared.request_id, deadline=deadline)
            classification = _classify(version, ran.outputs)
            if classification is not None:
                annotate_call(prediction=(classification.labels, classification.probabilities))
            result = _result(prepared, ran, classification)
            if shadow is not None:
                self._start_shadow(prepared, classification)
        except BaseException as exc:
            version.requests.record(time.perf_counter() - started, ok=False)
            if isinstance(exc, Exception) and not isinstance(exc, ServerError):
                logger.exception("inference failed on model %s version %d", version.name, version.version)
                raise InferenceFailed(request_id) from None
            raise
        version.requests.record(time.perf_counter() - started, ok=True)
        return result

    async def infer_many(
        self, requests: Sequence[InferRequest], *, deadline: float | None = None, metadata: Metadata | None = None
    ) -> list[InferResult | ServerError]:
        """Run many requests; each gets its result or its own error. Items for the same version and outputs
        are queued together, so validation and classification, not a coroutine each, are the per-item cost."""
        started = time.perf_counter()
        outcomes: list[InferResult | ServerError] = [InferenceFailed()] * len(requests)
        groups: dict[tuple[int, tuple[str, ...]], list[tuple[int, _Prepared]]] = defaultdict(list)
        routes: dict[tuple[str, int], tuple[ModelVersion, ModelVersion | None]] = {}
        for index, request in enumerate(requests):
            try:
                prepared = self._prepare(request, new_request_id(), metadata=metadata, routes=routes)
            except ServerError as exc:
                outcomes[index] = exc
                continue
            groups[(id(prepared.version), prepared.to_compute)].append((index, prepared))
        models = {(p.version.name, p.version.version) for members in groups.values() for _, p in members}
        if len(models) == 1:
            name, number = models.pop()
            annotate_call(model=name, version=number)
        await asyncio.gather(*(self._run_group(members, outcomes, deadline) for members in groups.values()))
        seconds = time.perf_counter() - started
        for members in groups.values():
            for index, prepared in members:
                prepared.version.requests.record(seconds, ok=not isinstance(outcomes[index], ServerError))
        return outcomes

    async def _run_group(
        self, members: list[tuple[int, _Prepared]], outcomes: list[InferResult | ServerError],
        deadline: float | None,
    ) -> None:
        first = members[0][1]
        version = first.version
        items = [(p.request.inputs, p.rows, p.request_id) for _, p in members]
        try:
            ran = await version.run_many(items, first.to_compute, deadline=deadline)
        except ServerError as exc:
            for index, _ in members:
                outcomes[index] = exc
            return
        succeeded = [(index, p, r) for (index, p), r in zip(members, ran, strict=True) if isinstance(r, BatchResult)]
        for (index, p), r in zip(members, ran, strict=True):
            if isinstance(r, ServerError):
                outcomes[index] = r
            elif not isinstance(r, BatchResult):
                logger.error("inference failed for request %s", p.request_id, exc_info=r)
                outcomes[index] = InferenceFailed(p.request_id)
        if not succeeded:
            return
        classification = _classify(version, _concatenate(version, [r.outputs for _, _, r in succeeded]))
        offset = 0
        for index, p, r in succeeded:
            share = None
            if classification is not None:
                share = Classification(labels=classification.labels[offset : offset + p.rows],
                                       probabilities=classification.probabilities[offset : offset + p.rows])
            offset += p.rows
            outcomes[index] = _result(p, r, share)
            if p.shadow is not None:
                self._start_shadow(p, share)

    # -- shadow copies ------------------------------------------------------------------------------------------

    def _start_shadow(self, served: _Prepared, classification: Classification | None) -> None:
        """Run a copy of a served request on its shadow version in the background; never delays the answer."""
        shadow = served.shadow
        assert shadow is not None
        if len(self._shadows) >= self._max_shadows:
            self._record_shadow(ShadowOutcome(shadow.name, str(shadow.version), "SKIPPED"))
            return
        # an empty context: the shadow run is not part of the served call's record, span or audit line
        task = asyncio.create_task(self._run_shadow(served, shadow, classification), context=contextvars.Context())
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _run_shadow(self, served: _Prepared, shadow: ModelVersion,
                          classification: Classification | None) -> None:
        started = time.perf_counter()
        code, compared, agreed = "OK", 0, 0
        try:
            prepared = self._prepare(served.request, served.request_id + SHADOW_SUFFIX, shadow)
            ran = await shadow.run(served.request.inputs, prepared.to_compute, rows=prepared.rows,
                                   request_id=prepared.request_id, deadline=None)
            answer = _classify(shadow, ran.outputs)
            if classification is not None and answer is not None and len(answer.labels) == len(classification.labels):
                compared = len(answer.labels)
                agreed = sum(a == b for a, b in zip(answer.labels, classification.labels, strict=True))
        except ServerError as exc:
            code = status_for(exc)[0].name
        except Exception:
            logger.exception("shadow run of model %s version %d failed", shadow.name, shadow.version)
            code = "INTERNAL"
        self._record_shadow(ShadowOutcome(shadow.name, str(shadow.version), code, time.perf_counter() - started,
                                          compared, agreed))

    def _record_shadow(self, outcome: ShadowOutcome) -> None:
        for hook in self._shadow_hooks:
            hook(outcome)

    async def close(self) -> None:
        """Wait for running shadow copies (they hold their version's batcher)."""
        if self._shadows:
            await asyncio.gather(*list(self._shadows), return_exceptions=True)


def _result(prepared: _Prepared, ran: BatchResult, classification: Classification | None) -> InferResult:
    version = prepared.version
    return InferResult(
        request_id=prepared.request_id,
        model_name=version.name,
        model_version=version.version,
        outputs={name: ran.outputs[name] for name in prepared.wanted},
        classification=classification,
        timings={"queue": ran.queue_seconds, "compute": ran.compute_seconds},
        batch_size=ran.batch_size,
    )


def _concatenate(version: ModelVersion, outputs: list[Arrays]) -> Arrays:
    """The probability output of many results as one array (what classification needs), or nothing."""
    name = version.config.probability_output
    if name is None or version.config.max_batch_size == 0:
        return outputs[0] if len(outputs) == 1 else {}
    return {name: outputs[0][name] if len(outputs) == 1 else np.concatenate([o[name] for o in outputs])}


def _classify(version: ModelVersion, outputs: Arrays) -> Classification | None:
    """Top class and its probability per row, when the model is configured as a classifier."""
    config = version.config
    if config.probability_output is None or config.probability_output not in outputs:
        return None
    probabilities = np.asarray(outputs[config.probability_output])
    if probabilities.ndim != 2 or probabilities.shape[1] == 0:
        return None
    top = probabilities.argmax(axis=1)
    labels = config.labels or [str(i) for i in range(probabilities.shape[1])]
    if len(labels) != probabilities.shape[1]:
        return None
    label_array = np.asarray(labels, dtype=object)
    return Classification(
        labels=label_array[top].tolist(),
        probabilities=probabilities[np.arange(len(top)), top].astype(np.float32),
    )
