"""Loading, reloading and unloading models at run time: under continuous traffic no request fails, a version that
fails to load leaves the old one serving, and the folder watcher does the same without a call."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest

from tests import onnx_models
from tests.conftest import running_app
from vigil.clients import AsyncClient, LoadFailed, ModelNotFound, Unavailable, VigilError
from vigil.protos.vigil.v1 import inference_pb2_grpc, telemetry_pb2
from vigil.server.app import App

Kind = telemetry_pb2.TelemetryEvent.Kind
ONES = np.ones((2, 4), np.float32)
CONFIG = 'max_batch_size = 16\nexecution_providers = ["cpu"]\n'
LATEST_ONE = CONFIG + "[version_policy]\nlatest = 1\n"


def add_version(root: Path, version: int, offset: float, model: str = "add") -> Path:
    """Write `model`'s version folder the way a deployment would: complete in a side folder, then one rename."""
    staging = root / f".staging-{model}-{version}"
    onnx_models.add_model(staging / "model.onnx", offset=offset)
    target = root / model / str(version)
    if target.exists():  # a new model.onnx over the old one, in one rename
        os.replace(staging / "model.onnx", target / "model.onnx")
        staging.rmdir()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
    return target / "model.onnx"


def repository(root: Path, config: str = CONFIG) -> Path:
    """A repository of one model, `add`, with version 1 answering a + b."""
    add_version(root, 1, offset=0.0)
    (root / "add" / "config.toml").write_text(config)
    return root


@dataclass
class Traffic:
    """Loops of Predict and BatchPredict without a version, recording (sent, version, sum) or the error of each
    request. BatchPredict carries an item over max_batch_size, which the batcher queues after the others."""

    client: AsyncClient
    answers: list[tuple[float, int, float]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, loops: int = 6, batch_loops: int = 2) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(loops)]
        self._tasks += [asyncio.create_task(self._batch_loop()) for _ in range(batch_loops)]

    async def _loop(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                result = await self.client.predict("add", {"a": ONES, "b": ONES})
            except VigilError as exc:
                self.errors.append(exc)
                continue
            self.answers.append((sent, result.model_version, float(result.outputs["sum"][0, 0])))

    async def _batch_loop(self) -> None:
        large = np.ones((40, 4), np.float32)
        items = [("add", {"a": ONES, "b": ONES})] * 3 + [("add", {"a": large, "b": large})]
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                results = await self.client.batch_predict(items)
            except VigilError as exc:
                self.errors.append(exc)
                continue
            for result in results:
                if isinstance(result, VigilError):
                    self.errors.append(result)
                else:
                    self.answers.append((sent, result.model_version, float(result.outputs["sum"][-1, 0])))

    async def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(self.answers) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait until `check()` (sync, or returning an awaitable) is true."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_new_version_is_swapped_in_under_load_without_a_failed_request(tmp_path: Path) -> None:
    repository(tmp_path, LATEST_ONE)
    async with running_app(tmp_path) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        traffic = Traffic(client)
        traffic.start()
        await traffic.wait_for(200)
        add_version(tmp_path, 2, offset=100.0)
        summary = await client.load_model("add")
        loaded = time.monotonic()
        count = len(traffic.answers)
        await traffic.wait_for(count + 200)
        await traffic.stop()
        models = {m.name: m for m in await client.list_models()}

    assert traffic.errors == []
    assert {(v, s) for _, v, s in traffic.answers} == {(1, 2.0), (2, 102.0)}  # each answer from the version named
    assert all(v == 2 for sent, v, _ in traffic.answers if sent > loaded)
    assert summary.default_version == 2
    assert [(v.version, v.state) for v in summary.versions] == [(1, "UNLOADED"), (2, "READY")]
    assert "version policy" in summary.versions[0].reason
    assert models["add"] == summary


async def test_a_changed_model_file_reloads_the_same_version_under_load(tmp_path: Path) -> None:
    repository(tmp_path)
    async with running_app(tmp_path) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        traffic = Traffic(client)
        traffic.start()
        await traffic.wait_for(200)
        add_version(tmp_path, 1, offset=50.0)
        summary = await client.load_model("add")
        loaded = time.monotonic()
        count = len(traffic.answers)
        await traffic.wait_for(count + 200)
        await traffic.stop()
        again = await client.load_model("add")  # nothing changed since: nothing is reloaded

    assert traffic.errors == []
    assert {(v, s) for _, v, s in traffic.answers} == {(1, 2.0), (1, 52.0)}
    assert all(s == 52.0 for sent, _, s in traffic.answers if sent > loaded)
    assert [(v.version, v.state) for v in summary.versions] == [(1, "READY")]
    assert again == summary


async def test_a_corrupt_new_version_leaves_the_old_one_serving(tmp_path: Path) -> None:
    repository(tmp_path)
    async with running_app(tmp_path) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        traffic = Traffic(client)
        traffic.start()
        await traffic.wait_for(100)
        (tmp_path / "add" / "2").mkdir()
        (tmp_path / "add" / "2" / "model.onnx").write_bytes(b"these bytes are not an ONNX model")
        with pytest.raises(LoadFailed) as failed:
            await client.load_model("add")
        (tmp_path / "add" / "1" / "model.onnx").write_bytes(b"nor are these")
        with pytest.raises(LoadFailed) as failed_again:
            await client.load_model("add")
        count = len(traffic.answers)
        await traffic.wait_for(count + 100)
        await traffic.stop()
        models = {m.name: m for m in await client.list_models()}

    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    message = failed.value.message
    assert "model 'add' version 2 failed to load" in message and "requests without a version go to version 1" in message
    assert "INVALID_PROTOBUF" in message or "pars" in message.lower()
    assert "version 1 failed to reload, its previous files keep serving" in failed_again.value.message
    assert traffic.errors == []
    assert {(v, s) for _, v, s in traffic.answers} == {(1, 2.0)}
    add = models["add"]
    assert add.default_version == 1
    assert [(v.version, v.state) for v in add.versions] == [(1, "READY"), (2, "FAILED")]
    assert add.versions[1].reason and add.versions[1].reason in message


async def test_a_failed_newer_version_or_config_keeps_the_policy_from_unloading_what_serves(tmp_path: Path) -> None:
    repository(tmp_path, LATEST_ONE)
    async with running_app(tmp_path) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        (tmp_path / "add" / "2").mkdir()
        (tmp_path / "add" / "2" / "model.onnx").write_bytes(b"not ONNX")
        with pytest.raises(LoadFailed, match="version 2 failed to load"):
            await client.load_model("add")
        add = {m.name: m for m in await client.list_models()}["add"]
        assert [(v.version, v.state) for v in add.versions] == [(1, "READY"), (2, "FAILED")]
        (tmp_path / "add" / "config.toml").write_text("max_batch_size = = 1")
        with pytest.raises(LoadFailed, match="was not reloaded: config.toml is not valid TOML"):
            await client.load_model("add")
        result = await client.predict("add", {"a": ONES, "b": ONES})
    assert (result.model_version, result.outputs["sum"][0, 0]) == (1, 2.0)


async def test_unload_and_load_follow_in_requests_and_health(tmp_path: Path) -> None:
    repository(tmp_path)
    async with running_app(tmp_path, strict_readiness=True) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        assert await client.health("model/add") == "SERVING"
        summary = await client.unload_model("add")
        assert summary.default_version == 0 and [v.state for v in summary.versions] == ["UNLOADED"]
        for version in (0, 1):
            with pytest.raises(Unavailable, match="model 'add' version 1 is unloaded"):
                await client.predict("add", {"a": ONES, "b": ONES}, version=version)
        assert await client.health("model/add") == "NOT_SERVING"
        assert await client.health("model/add/1") == "NOT_SERVING"
        assert await client.health() == "SERVING"  # unloaded on purpose: not a readiness failure
        await client.unload_model("add")  # again: nothing to do

        summary = await client.load_model("add")
        assert summary.default_version == 1 and [v.state for v in summary.versions] == ["READY"]
        assert (await client.predict("add", {"a": ONES, "b": ONES})).outputs["sum"][0, 0] == 2.0
        assert await client.health("model/add") == "SERVING"
        assert await client.health("model/add/1") == "SERVING"

        with pytest.raises(ModelNotFound, match="'absent'"):
            await client.load_model("absent")
        with pytest.raises(ModelNotFound, match="'absent'"):
            await client.unload_model("absent")
        with pytest.raises(VigilError, match="not a model folder name") as bad:
            await client.load_model("../add")
        assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_load_adds_a_new_model_and_a_removed_folder_unloads(tmp_path: Path) -> None:
    repository(tmp_path)
    async with running_app(tmp_path) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        add_version(tmp_path, 3, offset=7.0, model="other")
        summary = await client.load_model("other")
        assert summary.name == "other" and summary.default_version == 3
        assert (await client.predict("other", {"a": ONES, "b": ONES})).outputs["sum"][0, 0] == 9.0
        assert await client.health("model/other") == "SERVING"

        shutil.rmtree(tmp_path / "other")
        with pytest.raises(ModelNotFound, match="it was unloaded"):
            await client.load_model("other")
        other = {m.name: m for m in await client.list_models()}["other"]
        assert [v.state for v in other.versions] == ["UNLOADED"]
        assert "folder was removed" in other.versions[0].reason


async def test_the_watcher_loads_added_versions_and_unloads_removed_models(tmp_path: Path) -> None:
    repository(tmp_path)
    async with running_app(tmp_path, repository_poll_seconds=0.2) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        traffic = Traffic(client)
        traffic.start(loops=4)
        await traffic.wait_for(50)
        add_version(tmp_path, 2, offset=100.0)

        async def serves_version_2() -> bool:
            return (await client.predict("add", {"a": ONES, "b": ONES})).model_version == 2

        await eventually(serves_version_2)
        await traffic.stop()
        assert traffic.errors == []

        shutil.rmtree(tmp_path / "add")

        async def unloaded() -> bool:
            add = {m.name: m for m in await client.list_models()}["add"]
            return all(v.state == "UNLOADED" for v in add.versions)

        await eventually(unloaded)
        with pytest.raises(Unavailable, match="folder was removed"):
            await client.predict("add", {"a": ONES, "b": ONES})
        assert await client.health("model/add") == "NOT_SERVING"

        add_version(tmp_path, 1, offset=0.0)  # the folder comes back: the model is loaded again
        await eventually(lambda: _serving(client, "add"))


async def _serving(client: AsyncClient, model: str) -> bool:
    return await client.health(f"model/{model}") == "SERVING"


async def batch_runs(app: App, model: str, version: int) -> float:
    """The model version's ONNX Runtime runs counted by the batch hook, from /metrics."""
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{app.http_port}/metrics") as response:
        text = await response.text()
    pattern = rf'^vigil_batch_size_count{{(?=[^}}]*model="{model}")(?=[^}}]*version="{version}")[^}}]*}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_a_reload_is_reported_on_the_telemetry_stream_and_hooks_the_new_batcher(tmp_path: Path) -> None:
    repository(tmp_path, LATEST_ONE)
    async with running_app(tmp_path) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        stream = inference_pb2_grpc.InferenceStub(channel).Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100))
        await stream.read()
        add_version(tmp_path, 2, offset=100.0)
        await client.load_model("add")
        add_version(tmp_path, 2, offset=200.0)
        await client.load_model("add")
        before = await batch_runs(app, "add", 2)
        for _ in range(3):
            assert (await client.predict("add", {"a": ONES, "b": ONES})).outputs["sum"][0, 0] == 202.0
        assert await batch_runs(app, "add", 2) == before + 3  # the batch hooks reached the swapped-in batcher
        events: list[tuple[str, str, str]] = []
        deadline = time.monotonic() + 5
        while len(events) < 4 and time.monotonic() < deadline:
            frame = await asyncio.wait_for(stream.read(), timeout=5)
            events.extend((Kind.Name(e.kind), e.model, e.version) for e in frame.events if e.model == "add")
        stream.cancel()
    assert events == [
        ("MODEL_LOADED", "add", "2"),
        ("DEFAULT_VERSION_CHANGED", "add", "2"),
        ("MODEL_UNLOADED", "add", "1"),
        ("MODEL_LOADED", "add", "2"),  # the same version from changed files
    ]


async def test_requests_holding_a_retired_version_finish_before_it_closes(tmp_path: Path) -> None:
    """Requests queued on the old version's batcher when the new one is swapped in are answered by the old one."""
    onnx_models.slow_model(tmp_path / "slow" / "1" / "model.onnx")
    (tmp_path / "slow" / "config.toml").write_text(
        'max_batch_size = 1\nexecution_providers = ["cpu"]\n[warmup]\nruns = 0\n')
    async with running_app(tmp_path) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        rows = np.random.default_rng(3).normal(size=(100, 256)).astype(np.float32)
        # max_batch_size = 1: each request queues as 100 one-row runs
        queued = [asyncio.create_task(client.predict("slow", {"x": rows})) for _ in range(4)]
        await eventually(lambda: _queue_depth(app, "slow") > 50)
        os.utime(tmp_path / "slow" / "1" / "model.onnx", ns=(0, time.time_ns()))  # "changed": reload version 1
        await client.load_model("slow")
        results = await asyncio.gather(*queued)
    for result in results:
        assert np.allclose(result.outputs["y"], rows, rtol=1e-4, atol=1e-4)


def _queue_depth(app: App, name: str) -> int:
    version = app.repository.get(name).versions[1]
    return version.batcher.queue_depth if version.batcher else 0
