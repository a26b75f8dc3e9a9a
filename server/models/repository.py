"""The model repository: finds models and versions on disk, loads, reloads and unloads them, and resolves requests
to a version.

A reload never interrupts serving: the new version loads and warms up in a thread while the old one serves, one
assignment swaps it in, and the old one is closed only after its queued and running requests finished.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from vigil.server.errors import InvalidInput, ModelLoadFailed, ModelNotFound, quoted
from vigil.server.models.config import ConfigError, ModelConfig, load_config
from vigil.server.models.versions import MODEL_FILE, Model, ModelVersion, VersionState, file_stamp
from vigil.telemetry.calls.context import annotate_call

__all__ = ["DRAIN_SECONDS", "MODEL_FILE", "Model", "ModelRepository", "ModelVersion", "StateListener",
           "VersionState"]

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0
MAX_NAME_BYTES = 255
"""The longest model name: a folder name, as file systems allow it."""
"""Longest a replaced or unloaded version waits for its queued and running requests before it is closed."""

StateListener = Callable[[Model], Awaitable[None]]

_T = TypeVar("_T")


class ModelRepository:
    """Every model under one folder, loaded in parallel threads at start-up and reloaded on request.

    >>> repository = ModelRepository(Path("models"))
    >>> await repository.load_all()
    >>> repository.resolve("breast_cancer", 0).version
    1
    """

    def __init__(self, root: Path, *, load_workers: int = 2, drain_seconds: float = DRAIN_SECONDS) -> None:
        if load_workers < 1:
            raise ValueError(f"load_workers must be at least 1, got {load_workers}")
        if drain_seconds < 0:
            raise ValueError(f"drain_seconds must be at least 0, got {drain_seconds}")
        self.root = root
        self._load_workers = load_workers
        self._drain_seconds = drain_seconds
        self._models: dict[str, Model] = {}
        self._listeners: list[StateListener] = []
        # A lock lives while some call holds or waits for it, so names that never exist leave none behind.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        """One lifecycle operation per model at a time (start-up load, load, unload)."""
        self._load_slots = asyncio.Semaphore(load_workers)
        """Versions loading at once after start-up (the start-up load has its own pool of as many threads)."""

    def add_listener(self, listener: StateListener) -> None:
        """Await `listener(model)` whenever a version of that model changes state or is replaced."""
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
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=self._load_workers, thread_name_prefix="model-load") as pool:
            async def load(model: Model) -> None:
                async with self._lock(model.name):
                    pending = [v for v in model.versions.values() if v.state is VersionState.LOADING]
                    await asyncio.gather(*(load_version(model, v) for v in pending))

            async def load_version(model: Model, version: ModelVersion) -> None:
                await loop.run_in_executor(pool, version.load)
                await self._notify(model)

            await asyncio.gather(*(load(m) for m in list(self._models.values())))

    async def load_model(self, name: str) -> Model:
        """Bring a model in line with its folder: load new versions and versions whose files or config changed,
        retire versions no longer selected, add the model if it is new.

        Changed versions load and warm up while the loaded ones serve; each is swapped in once ready. Raises
        ModelLoadFailed when the config or a version failed (what was serving goes on serving) and ModelNotFound
        when the folder does not exist (a model whose folder was removed is unloaded). Finishes even if the caller
        is cancelled.
        """
        folder = self._folder(name)
        return await _finish_anyway(self._locked(name, self._load(name, folder)))

    async def unload_model(self, name: str, *, reason: str = "") -> Model:
        """Unload every version of a model once its queued and running requests finished; the model stays listed
        with its versions UNLOADED (requests get ModelNotReady) until `load_model` brings it back."""
        if not name:
            raise InvalidInput("model_name is empty; name the model to unload")
        model = self.get(name)
        annotate_call(model=name)
        await _finish_anyway(self._locked(name, self._unload(model, reason)))
        return model

    def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFound(f"model {quoted(name)} is not in the repository (models: {known})")
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

    async def close(self) -> None:
        """Unload every version (queued requests fail) and wait for the worker threads."""
        batchers = [b for model in self._models.values() for v in model.versions.values()
                    if (b := v.unload()) is not None]

        def join() -> None:
            for batcher in batchers:
                batcher.join()

        await asyncio.to_thread(join)

    async def _notify(self, model: Model) -> None:
        for listener in self._listeners:
            try:
                await listener(model)
            except Exception:
                logger.exception("model state listener failed")

    def _folder(self, name: str) -> Path:
        if not name:
            raise InvalidInput("model_name is empty; name the model folder to load")
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise InvalidInput(f"model_name {quoted(name)} is longer than a model folder name can be "
                               f"(at most {MAX_NAME_BYTES} bytes)")
        if name != Path(name).name or name in (".", "..") or name[0] in "._" or "\0" in name:
            raise InvalidInput(f"model_name {quoted(name)} is not a model folder name (a plain name, not starting "
                               "with '.' or '_')")
        return self.root / name

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def _locked(self, name: str, operation: Coroutine[Any, Any, _T]) -> _T:
        async with self._lock(name):
            return await operation

    async def _load(self, name: str, folder: Path) -> Model:
        if not await asyncio.to_thread(folder.is_dir):
            if name in self._models:
                await self._unload(self._models[name], "its folder was removed from the repository")
                raise ModelNotFound(f"model '{name}' has no folder in the repository any more; it was unloaded")
            raise ModelNotFound(f"model {quoted(name)} has no folder in the model repository")
        # Only a model that exists is named in telemetry: a made-up name must leave no series behind.
        annotate_call(model=name)
        fresh = await asyncio.to_thread(_read_model, folder)
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = Model(name=name, path=folder, config=fresh.config)
            logger.info("model %s added to the repository", name)
        if fresh.config is None:
            await self._config_failed(model, fresh.reason)
        config_changed = model.config != fresh.config
        model.config = fresh.config
        selected = fresh.versions
        changed = [c for n, c in sorted(selected.items()) if _needs_load(model.versions.get(n), c)]
        for candidate in changed:
            current = model.versions.get(candidate.version)
            if current is None or not current.is_ready:  # nothing to keep serving: show it LOADING meanwhile
                model.versions[candidate.version] = ModelVersion(
                    name=name, version=candidate.version, path=candidate.path, config=candidate.config)
        if selected:
            model.reason = ""
        if changed or config_changed:  # listeners see config-only changes too (e.g. a new rollout)
            await self._notify(model)
        failures = [f for f in await asyncio.gather(*(self._swap_in(model, c) for c in changed)) if f]
        await self._retire_unselected(model, selected)
        if not selected:
            model.reason = fresh.reason
            await self._notify(model)
            raise ModelLoadFailed(f"model '{name}' has nothing to serve: {fresh.reason}")
        if failures:
            raise ModelLoadFailed(f"model '{name}' " + "; ".join(failures) + f"; {_serving(model)}")
        return model

    async def _config_failed(self, model: Model, reason: str) -> NoReturn:
        if model.default_version is not None:
            raise ModelLoadFailed(f"model '{model.name}' was not reloaded: {reason}; {_serving(model)}")
        model.config, model.reason = None, reason
        await self._notify(model)
        raise ModelLoadFailed(f"model '{model.name}' cannot be loaded: {reason}")

    async def _swap_in(self, model: Model, candidate: ModelVersion) -> str:
        """Load `candidate` and put it in place of the version it replaces; the reason it failed, or ''."""
        if candidate.state is VersionState.LOADING:
            async with self._load_slots:
                await asyncio.to_thread(candidate.load)
        number = candidate.version
        current = model.versions.get(number)
        was_serving = current is not None and current.is_ready
        if was_serving and not candidate.is_ready:
            logger.error("model %s version %d: the changed files failed to load (%s); the files loaded before "
                         "keep serving", model.name, number, candidate.reason)
            return f"version {number} failed to reload, its previous files keep serving: {candidate.reason}"
        model.versions[number] = candidate  # the swap: requests resolved from now on get the new version
        await self._notify(model)
        if current is not None:
            await self._retire(current)
        if candidate.is_ready:
            logger.info("model %s version %d %s", model.name, number, "reloaded" if was_serving else "loaded")
            return ""
        return f"version {number} failed to load: {candidate.reason}"

    async def _retire_unselected(self, model: Model, selected: dict[int, ModelVersion]) -> None:
        """Unload versions the folder and policy no longer select, unless they are all that can serve."""
        gone = [v for n, v in model.versions.items() if n not in selected and v.state is not VersionState.UNLOADED]
        if selected and not any(model.versions[n].is_ready for n in selected):
            kept = [v for v in gone if v.is_ready]
            if kept:
                logger.warning("model %s: versions %s are no longer selected but keep serving, since no selected "
                               "version is ready", model.name, ", ".join(str(v.version) for v in kept))
            gone = [v for v in gone if not v.is_ready]
        if not gone:
            return
        for version in gone:
            why = ("its folder was removed" if not version.path.is_dir()
                   else "the version policy no longer selects it")
            model.versions[version.version] = _unloaded(version, why)
        await self._notify(model)
        await asyncio.gather(*(self._retire(v) for v in gone))

    async def _unload(self, model: Model, reason: str) -> None:
        old = [v for v in model.versions.values() if v.state is not VersionState.UNLOADED]
        if not old:
            return
        for version in old:
            model.versions[version.version] = _unloaded(version, reason)
        await self._notify(model)
        await asyncio.gather(*(self._retire(v) for v in old))
        logger.info("model %s unloaded%s", model.name, f": {reason}" if reason else "")

    async def _retire(self, version: ModelVersion) -> None:
        """Close a version that requests can no longer resolve, once those already holding it are done."""
        if version.batcher is None:
            version.unload()
            return
        if not await version.drain(self._drain_seconds):
            logger.warning("model %s version %d still had requests after %.1fs; closing it anyway (they fail)",
                           version.name, version.version, self._drain_seconds)
        batcher = version.unload()
        if batcher is not None:
            await asyncio.to_thread(batcher.join)


async def _finish_anyway(operation: Coroutine[Any, Any, _T]) -> _T:
    """Await `operation` in a task that runs to the end even if the caller is cancelled (a call's deadline, a
    client gone): stopped halfway, a swap would leave a replaced version unclosed or a version LOADING for ever."""
    task = asyncio.ensure_future(operation)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("model lifecycle operation ended with: %s", task.exception())


def _serving(model: Model) -> str:
    default = model.default_version
    return f"requests without a version go to version {default.version}" if default else "no version is ready"


def _needs_load(current: ModelVersion | None, candidate: ModelVersion) -> bool:
    """True unless `current` is ready and loaded from the same model.onnx with the same serving config."""
    return (
        current is None or not current.is_ready or current.stamp != candidate.stamp
        or _serving_config(current.config) != _serving_config(candidate.config)
    )


def _serving_config(config: ModelConfig) -> dict[str, Any]:
    """The config a loaded version depends on (the version policy selects versions, the rollout splits traffic)."""
    return config.model_dump(exclude={"version_policy", "rollout"})


def _unloaded(version: ModelVersion, reason: str) -> ModelVersion:
    return ModelVersion(name=version.name, version=version.version, path=version.path, config=version.config,
                        state=VersionState.UNLOADED, reason=reason)


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
        version.stamp = file_stamp(version.path / MODEL_FILE)
        if version.stamp is None:
            version.state = VersionState.FAILED
            version.reason = f"{number}/{MODEL_FILE} is missing"
        model.versions[number] = version
    if not model.versions:
        model.reason = f"version_policy selects none of the versions present ({sorted(numbered)})"
    return model
