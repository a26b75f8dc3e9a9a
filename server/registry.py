"""The model repository: finds models and versions on disk, loads them, and resolves requests to a version."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from server.batcher import BatchResult, DynamicBatcher
from server.errors import InvalidInput, ModelNotFound, ModelNotReady
from server.model_config import ConfigError, ModelConfig, load_config
from server.sessions import Arrays, ModelSession
from server.signature import Signature
from server.statistics import RequestStatistics

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"


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

    @property
    def is_ready(self) -> bool:
        return self.state is VersionState.READY

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
        return await self.batcher.submit(inputs, output_names, rows=rows, request_id=request_id, deadline=deadline)

    async def run_many(
        self, items: list[tuple[Arrays, int, str]], output_names: tuple[str, ...], *, deadline: float | None = None
    ) -> list[BatchResult | BaseException]:
        """Queue many (inputs, rows, request id) items at once; each gets its result or its own exception."""
        if self.batcher is None:
            raise ModelNotReady(self.not_ready_message())
        return await self.batcher.submit_many(items, output_names, deadline=deadline)

    def unload(self) -> None:
        self.state = VersionState.UNLOADED
        self.session = None
        if self.batcher is not None:
            self.batcher.close()
            self.batcher = None


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
        ready = [v for v in self.versions.values() if v.is_ready]
        return max(ready, key=lambda v: v.version) if ready else None

    def find(self, version: int) -> ModelVersion:
        """The version named, ready or not (0: the default, else the highest-numbered); raises ModelNotFound."""
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
        if version < 0:
            raise InvalidInput(f"model_version must be 0 (latest) or a positive number, got {version}")
        if self.reason:
            raise ModelNotReady(f"model '{self.name}' is not available: {self.reason}")
        if version == 0:
            chosen = self.default_version
            if chosen is None:
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


StateListener = Callable[[Model], Awaitable[None]]


class ModelRepository:
    """Every model under one folder, loaded in parallel threads at start-up.

    >>> repository = ModelRepository(Path("models"))
    >>> await repository.load_all()
    >>> repository.resolve("breast_cancer", 0).version
    1
    """

    def __init__(self, root: Path, *, load_workers: int = 2) -> None:
        if load_workers < 1:
            raise ValueError(f"load_workers must be at least 1, got {load_workers}")
        self.root = root
        self._load_workers = load_workers
        self._models: dict[str, Model] = {}
        self._listeners: list[StateListener] = []

    def add_listener(self, listener: StateListener) -> None:
        """Await `listener(model)` whenever a version of that model changes state."""
        self._listeners.append(listener)

    @property
    def models(self) -> list[Model]:
        return [self._models[name] for name in sorted(self._models)]

    def scan(self) -> None:
        """Read the folder layout and configs; versions start LOADING. Cheap: no ONNX Runtime work."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"model repository {self.root} is not a folder")
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name[0] not in "._"):
            self._models[model_dir.name] = _read_model(model_dir)

    async def load_all(self) -> None:
        """Scan (if not yet done) and load every LOADING version; failures are recorded, not raised."""
        if not self._models:
            self.scan()
        for model in self._models.values():
            await self._notify(model)
        pending = [(m, v) for m in self._models.values() for v in m.versions.values()
                   if v.state is VersionState.LOADING]
        if not pending:
            return
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=self._load_workers, thread_name_prefix="model-load") as pool:
            async def load(model: Model, version: ModelVersion) -> None:
                await loop.run_in_executor(pool, version.load)
                await self._notify(model)
            await asyncio.gather(*(load(m, v) for m, v in pending))

    def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"model '{name}' is not in the repository (models: {known})")
        return model

    def resolve(self, name: str, version: int) -> ModelVersion:
        """The ready version that serves a request for (`name`, `version`); 0 means the default version."""
        if not name:
            raise InvalidInput("model_name is empty; name the model to use")
        return self.get(name).resolve(version)

    @property
    def is_ready(self) -> bool:
        """True when every model has a ready default version."""
        return all(m.default_version is not None for m in self._models.values())

    def close(self) -> None:
        for model in self._models.values():
            for version in model.versions.values():
                version.unload()

    async def _notify(self, model: Model) -> None:
        for listener in self._listeners:
            try:
                await listener(model)
            except Exception:
                logger.exception("model state listener failed")


def _read_model(model_dir: Path) -> Model:
    try:
        config = load_config(model_dir)
    except ConfigError as exc:
        logger.error("model %s: %s", model_dir.name, exc)
        return Model(name=model_dir.name, path=model_dir, config=None, reason=str(exc))
    numbered = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]
    model = Model(name=model_dir.name, path=model_dir, config=config)
    if not numbered:
        model.reason = "no numbered version folders (e.g. 1/model.onnx)"
        logger.error("model %s: %s", model.name, model.reason)
        return model
    for number in config.version_policy.select(numbered):
        version = ModelVersion(name=model.name, version=number, path=model_dir / str(number), config=config)
        if not (version.path / MODEL_FILE).is_file():
            version.state = VersionState.FAILED
            version.reason = f"{number}/{MODEL_FILE} is missing"
        model.versions[number] = version
    if not model.versions:
        model.reason = f"version_policy selects none of the versions present ({sorted(numbered)})"
    return model


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
