"""Watching the model repository folder: models whose files changed, appeared or disappeared are reloaded,
loaded or unloaded without a call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from vigil.server.errors import ServerError
from vigil.server.models.config import CONFIG_FILE
from vigil.server.models.repository import ModelRepository
from vigil.server.models.versions import MODEL_FILE, FileStamp, file_stamp

logger = logging.getLogger(__name__)

ModelPrint = tuple[bytes | None, tuple[tuple[str, FileStamp | None], ...]]
"""One model folder in brief: its config.toml bytes, and each numbered folder's name and model.onnx stamp."""


def fingerprint(root: Path) -> dict[str, ModelPrint]:
    """Every model folder of the repository in brief (a few stat calls and one small read per model).

    Raises OSError when the folder cannot be read, for instance while a model folder is being removed.
    """
    prints: dict[str, ModelPrint] = {}
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name[0] in "._":
            continue
        config = folder / CONFIG_FILE
        settings = config.read_bytes() if config.is_file() else None
        versions = tuple(sorted((p.name, file_stamp(p / MODEL_FILE)) for p in folder.iterdir()
                                if p.is_dir() and p.name.isdigit()))
        prints[folder.name] = (settings, versions)
    return prints


class RepositoryWatcher:
    """Polls the repository folder and brings the repository in line with what changed on disk.

    A change is acted on once it has held still for one interval, so a model file still being copied is not
    loaded half-written. A model whose load failed is tried again only when its files change again.

    >>> watcher = RepositoryWatcher(repository, interval=5.0)
    >>> watcher.start()            # after the start-up load
    >>> await watcher.stop()
    """

    def __init__(self, repository: ModelRepository, *, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self._repository = repository
        self._interval = interval
        self._applied: dict[str, ModelPrint] | None = None
        """The files the repository was last brought in line with (None until the first look)."""
        self._seen: dict[str, ModelPrint] = {}
        """What the previous poll saw."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take the first look now (the models were just loaded from these files), then poll every interval."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="repository-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except OSError as exc:  # a folder vanished while it was read: look again next time
                logger.warning("could not read the model repository %s: %s", self._repository.root, exc)
            except Exception:
                logger.exception("checking the model repository failed")
            await asyncio.sleep(self._interval)

    async def check(self) -> None:
        """One poll: load, reload or unload each model whose files differ from those applied and have not changed
        since the previous poll."""
        current = await asyncio.to_thread(fingerprint, self._repository.root)
        if self._applied is None:
            self._applied = self._seen = current
            return
        applied = self._applied
        for name in sorted(current.keys() | applied.keys()):
            now = current.get(name)
            if now == applied.get(name) or now != self._seen.get(name):
                continue  # unchanged, or still changing
            await self._apply(name, now is not None)
            if now is None:
                applied.pop(name, None)
            else:
                applied[name] = now
        self._seen = current

    async def _apply(self, name: str, exists: bool) -> None:
        try:
            if exists:
                logger.info("model %s changed on disk: loading it", name)
                await self._repository.load_model(name)
            else:
                logger.info("model %s was removed from disk: unloading it", name)
                await self._repository.unload_model(name, reason="its folder was removed from the repository")
        except ServerError as exc:
            logger.warning("%s", exc)
        except Exception:
            logger.exception("model %s: applying the change on disk failed", name)
