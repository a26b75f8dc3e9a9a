"""A model and its numbered versions: each version's state, session and batcher, and how a version drains."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vigil.server.batching.batcher import DynamicBatcher
from vigil.server.batching.records import Arrays, BatchResult
from vigil.server.batching.statistics import RequestStatistics
from vigil.server.errors import InvalidInput, ModelNotFound, ModelNotReady
from vigil.server.models.config import ModelConfig
from vigil.server.models.sessions import ModelSession
from vigil.server.models.signature import Signature

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"

FileStamp = tuple[int, int]
"""A file's size and modification time in nanoseconds: cheap to read, and different once the file is rewritten."""

_DRAIN_POLL_SECONDS = 0.005


def file_stamp(path: Path) -> FileStamp | None:
    """The stamp of `path`, or None when there is no such file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


class VersionState(enum.Enum):
    """Lifecycle of one model version."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"


@dataclass
class ModelVersion:
    """One numbered version of a model: its session once loaded, or the reason it is not ready."""

    name: str
    version: int
    path: Path
    config: ModelConfig
    state: VersionState = VersionState.LOADING
    reason: str = ""
    session: ModelSession | None = None
    """The first instance's session (every instance has the same signature and providers)."""
    batcher: DynamicBatcher | None = field(default=None, repr=False)
    requests: RequestStatistics = field(default_factory=RequestStatistics)
    """Requests that reached this version, succeeded or failed."""
    load_seconds: float = 0.0
    stamp: FileStamp | None = None
    """The stamp of model.onnx when the version was read from disk: a different stamp means changed files."""
    _calls: int = field(default=0, init=False, repr=False)
    """Calls inside `run` or `run_many`: they hold this version's batcher."""

    @property
    def is_ready(self) -> bool:
        return self.state is VersionState.READY

    @property
    def is_idle(self) -> bool:
        """True when no call waits on this version and its batcher holds nothing queued or running."""
        batcher = self.batcher
        return self._calls == 0 and (batcher is None or (batcher.queue_depth == 0 and batcher.in_flight == 0))

    @property
    def signature(self) -> Signature:
        if self.session is None:
            raise ModelNotReady(self.not_ready_message())
        return self.session.signature

    @property
    def providers(self) -> list[str]:
        return self.session.providers if self.session else []

    def not_ready_message(self) -> str:
        detail = f": {self.reason}" if self.reason else ""
        return f"model '{self.name}' version {self.version} is {self.state.value.lower()}{detail}"

    def load(self) -> None:
        """Create the session, check it against the config, warm it up. Blocks; run in a thread."""
        started = time.perf_counter()
        config = self.config
        try:
            sessions = [ModelSession(self.path / MODEL_FILE, config) for _ in range(config.instances)]
            _check_against_config(sessions[0].signature, config)
            for session in sessions:
                session.warm_up(
                    rows=min(config.warmup.rows, max(config.max_batch_size, 1)),
                    runs=config.warmup.runs,
                    has_batch_dim=config.max_batch_size > 0,
                )
        except Exception as exc:  # any failure leaves this version FAILED and the server up
            self.state = VersionState.FAILED
            self.reason = _short_reason(exc)
            logger.error("model %s version %d failed to load: %s", self.name, self.version, self.reason)
            return
        self.session = sessions[0]
        self.batcher = DynamicBatcher(
            sessions, model=self.name, version=self.version,
            max_batch_size=config.max_batch_size, max_queue_size=config.max_queue_size,
            max_queue_delay=config.max_queue_delay_ms / 1000.0, preferred_batch_sizes=config.preferred_batch_sizes,
            execution_provider=sessions[0].providers[0] if sessions[0].providers else "",
        )
        self.load_seconds = time.perf_counter() - started
        self.state = VersionState.READY
        logger.info(
            "model %s version %d ready in %.3fs on %s",
            self.name, self.version, self.load_seconds, ",".join(self.session.providers),
        )

    async def run(
        self, inputs: Arrays, output_names: tuple[str, ...], *, rows: int, request_id: str,
        deadline: float | None = None,
    ) -> BatchResult:
        """Queue the request on this version's batcher; the run happens in a worker thread."""
        if self.batcher is None:
            raise ModelNotReady(self.not_ready_message())
        self._calls += 1
        try:
            return await self.batcher.submit(inputs, output_names, rows=rows, request_id=request_id,
                                             deadline=deadline)
        finally:
            self._calls -= 1

    async def run_many(
        self, items: list[tuple[Arrays, int, str]], output_names: tuple[str, ...], *, deadline: float | None = None
    ) -> list[BatchResult | BaseException]:
        """Queue many (inputs, rows, request id) items at once; each gets its result or its own exception."""
        if self.batcher is None:
            raise ModelNotReady(self.not_ready_message())
        self._calls += 1  # submit_many may queue its oversized items only after the others finished
        try:
            return await self.batcher.submit_many(items, output_names, deadline=deadline)
        finally:
            self._calls -= 1

    async def drain(self, timeout: float) -> bool:
        """Wait, at most `timeout` seconds, until no request uses this version; False when some still do.

        Call it once the version can no longer be resolved: nothing new arrives, so idle stays idle.
        """
        # A request resolves its version and queues on its batcher without yielding, except BatchPredict, whose
        # groups start as tasks on the next loop turn: yielding once lets those queue before the first look.
        await asyncio.sleep(0)
        deadline = time.monotonic() + timeout
        while not self.is_idle:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_DRAIN_POLL_SECONDS)
        return True

    def unload(self) -> DynamicBatcher | None:
        """Stop serving: queued requests fail, the worker threads are told to end. On the event loop thread; returns
        the batcher, whose `join` waits for its threads (off the loop)."""
        self.state = VersionState.UNLOADED
        self.session = None
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            batcher.close()
        return batcher


@dataclass
class Model:
    """A model folder: its config and versions, or the reason it could not be read."""

    name: str
    path: Path
    config: ModelConfig | None
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    reason: str = ""

    @property
    def default_version(self) -> ModelVersion | None:
        """The highest-numbered version that is ready: requests without a version go there."""
        best = None
        for v in self.versions.values():
            if v.state is VersionState.READY and (best is None or v.version > best.version):
                best = v
        return best

    @property
    def is_unloaded(self) -> bool:
        """True when the model is listed but every version was unloaded (on request, or its files were removed)."""
        return bool(self.versions) and all(v.state is VersionState.UNLOADED for v in self.versions.values())

    def find(self, version: int) -> ModelVersion:
        """The version named, ready or not (0: the default, else the highest-numbered); raises ModelNotFound."""
        _check_version_number(version)
        if version == 0:
            chosen = self.default_version or max(self.versions.values(), key=lambda v: v.version, default=None)
            if chosen is None:
                raise ModelNotReady(f"model '{self.name}' is not available: {self.reason or 'it has no versions'}")
            return chosen
        found = self.versions.get(version)
        if found is None:
            known = ", ".join(str(v) for v in sorted(self.versions)) or "none"
            raise ModelNotFound(f"model '{self.name}' has no version {version} (versions served: {known})")
        return found

    def resolve(self, version: int) -> ModelVersion:
        """The version a request names (0 means the default); raises ModelNotFound or ModelNotReady."""
        _check_version_number(version)
        if self.reason:
            raise ModelNotReady(f"model '{self.name}' is not available: {self.reason}")
        if version == 0:
            chosen = self.default_version
            if chosen is None:
                if self.is_unloaded:
                    raise ModelNotReady(self.versions[max(self.versions)].not_ready_message())
                states = ", ".join(f"{v.version}: {v.state.value.lower()}" for v in self.versions.values())
                reasons = "; ".join(f"version {v.version}: {v.reason}" for v in self.versions.values() if v.reason)
                raise ModelNotReady(
                    f"model '{self.name}' has no ready version ({states})" + (f"; {reasons}" if reasons else "")
                )
            return chosen
        found = self.find(version)
        if not found.is_ready:
            raise ModelNotReady(found.not_ready_message())
        return found


def _check_against_config(signature: Signature, config: ModelConfig) -> None:
    if config.max_batch_size > 0:
        for spec in (*signature.inputs, *signature.outputs):
            if spec.shape and spec.shape[0] is not None:
                kind = "input" if spec in signature.inputs else "output"
                raise ValueError(
                    f"max_batch_size is {config.max_batch_size} but {kind} '{spec.name}' has shape "
                    f"{spec.shape_text} without a dynamic first (batch) dimension; set max_batch_size = 0"
                )
        for spec in signature.inputs:
            if not spec.shape:
                raise ValueError(f"max_batch_size is {config.max_batch_size} but input '{spec.name}' is a scalar")
    if config.probability_output is not None:
        out = signature.output(config.probability_output)
        if out is None:
            raise ValueError(
                f"probability_output '{config.probability_output}' is not an output "
                f"(outputs: {', '.join(signature.output_names)})"
            )
        if len(out.shape) != 2:
            raise ValueError(f"probability_output '{out.name}' must have shape [rows, classes], not {out.shape_text}")
        classes = out.shape[1]
        if config.labels and classes is not None and classes != len(config.labels):
            raise ValueError(f"{len(config.labels)} labels given but '{out.name}' has {classes} classes")


def _short_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first if len(first) <= 500 else first[:497] + "..."


def _check_version_number(version: int) -> None:
    if version < 0:
        raise InvalidInput(f"model_version must be 0 (latest) or a positive number, got {version}")
