"""The model repository: a bad model never takes the server down, versions and policies resolve as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import onnx_models
from tests.conftest import make_settings, running_app
from vigil.clients import AsyncClient, Unavailable
from vigil.server.app import App
from vigil.server.errors import InvalidInput, ModelNotFound, ModelNotReady
from vigil.server.models.config import ConfigError, VersionPolicy, load_config
from vigil.server.models.repository import ModelRepository, VersionState


async def test_corrupt_model_beside_a_good_one(app: App) -> None:
    async with AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        models = {m.name: m for m in await client.list_models()}
        corrupt = models["corrupt"]
        assert corrupt.default_version == 0
        assert corrupt.versions[0].state == "FAILED"
        assert "INVALID_PROTOBUF" in corrupt.versions[0].reason or "parsing" in corrupt.versions[0].reason.lower()
        assert models["breast_cancer"].versions[0].state == "READY"
        assert models["breast_cancer"].versions[0].execution_providers == ["CPUExecutionProvider"]
        result = await client.predict("breast_cancer", np.zeros((1, 30), np.float32))
        assert result.labels[0] in ("malignant", "benign")
        info = await client.model_metadata("corrupt")
        assert info.state == "FAILED" and info.reason == corrupt.versions[0].reason


async def test_metadata_comes_from_the_graph_and_the_config(app: App) -> None:
    async with AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        info = await client.model_metadata("breast_cancer")
        assert [(i.name, i.dtype, i.shape) for i in info.inputs] == [("features", "FP32", (-1, 30))]
        assert [(o.name, o.dtype, o.shape) for o in info.outputs] == [
            ("label", "INT64", (-1,)), ("probabilities", "FP32", (-1, 2))]
        assert info.labels == ["malignant", "benign"] and info.probability_output == "probabilities"
        assert info.max_batch_size == 256 and info.execution_providers == ["CPUExecutionProvider"]
        add = await client.model_metadata("add", 1)
        assert add.version == 1 and add.versions == [1, 2]
        seq = await client.model_metadata("sequence")
        assert seq.inputs[0].shape == (-1, -1, 8)


def write(root: Path, name: str, config: str | None = None, versions: tuple[int, ...] = (1,)) -> None:
    for v in versions:
        onnx_models.add_model(root / name / str(v) / "model.onnx", offset=float(v))
    if config is not None:
        (root / name / "config.toml").write_text(config)


async def test_load_failures_are_reported_with_their_reason(tmp_path: Path) -> None:
    write(tmp_path, "good")
    write(tmp_path, "bad_toml", "max_batch_size = = 3")
    write(tmp_path, "bad_field", "max_batch_sizes = 3")
    write(tmp_path, "bad_value", "max_batch_size = -1")
    write(tmp_path, "bad_probs", 'probability_output = "nope"')
    write(tmp_path, "bad_labels", 'probability_output = "sum"\nlabels = ["x", "x"]')
    write(tmp_path, "labels_without_output", 'labels = ["x"]')
    onnx_models.fixed_model(tmp_path / "static_batch" / "1" / "model.onnx")  # default max_batch_size 64
    (tmp_path / "no_versions").mkdir()
    (tmp_path / "missing_file" / "1").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    repository = ModelRepository(tmp_path)
    await repository.load_all()
    by_name = {m.name: m for m in repository.models}
    assert ".hidden" not in by_name
    assert repository.resolve("good", 0).is_ready
    assert "not valid TOML" in by_name["bad_toml"].reason
    assert "max_batch_sizes" in by_name["bad_field"].reason
    assert "max_batch_size" in by_name["bad_value"].reason
    assert "labels must be distinct" in by_name["bad_labels"].reason
    assert "probability_output is not" in by_name["labels_without_output"].reason
    assert "'nope' is not an output" in by_name["bad_probs"].versions[1].reason
    assert "dynamic first (batch) dimension" in by_name["static_batch"].versions[1].reason
    assert "no numbered version folders" in by_name["no_versions"].reason
    assert by_name["missing_file"].versions[1].state is VersionState.FAILED
    assert "model.onnx is missing" in by_name["missing_file"].versions[1].reason
    for name in ("bad_toml", "bad_probs", "no_versions", "missing_file"):
        with pytest.raises(ModelNotReady, match=name):
            repository.resolve(name, 0)
    with pytest.raises(ModelNotFound):
        repository.resolve("absent", 0)
    assert not repository.is_ready
    await repository.close()


async def test_latest_ready_version_serves_when_the_newest_fails(tmp_path: Path) -> None:
    write(tmp_path, "m", versions=(1, 2))
    (tmp_path / "m" / "3").mkdir()
    (tmp_path / "m" / "3" / "model.onnx").write_bytes(b"broken")
    repository = ModelRepository(tmp_path)
    await repository.load_all()
    assert repository.resolve("m", 0).version == 2
    with pytest.raises(ModelNotReady, match="version 3"):
        repository.resolve("m", 3)
    with pytest.raises(InvalidInput):
        repository.resolve("m", -3)
    await repository.close()


async def test_version_policy_latest_and_specific(tmp_path: Path) -> None:
    write(tmp_path, "latest", "[version_policy]\nlatest = 2\n", versions=(1, 2, 3))
    write(tmp_path, "specific", "[version_policy]\nspecific = [1, 3]\n", versions=(1, 2, 3))
    repository = ModelRepository(tmp_path)
    await repository.load_all()
    assert sorted(repository.get("latest").versions) == [2, 3]
    assert sorted(repository.get("specific").versions) == [1, 3]
    with pytest.raises(ModelNotFound, match="versions served: 1, 3"):
        repository.resolve("specific", 2)
    await repository.close()


def test_version_policy_select() -> None:
    assert VersionPolicy().select([3, 1, 2]) == [1, 2, 3]
    assert VersionPolicy(latest=1).select([3, 1, 2]) == [3]
    assert VersionPolicy(specific=[2, 9]).select([3, 1, 2]) == [2]
    with pytest.raises(ValueError, match="not both"):
        VersionPolicy(latest=1, specific=[1])


def test_config_defaults_and_provider_names(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.max_batch_size == 64 and config.ort_providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    (tmp_path / "config.toml").write_text('execution_providers = []')
    with pytest.raises(ConfigError, match="at least one provider"):
        load_config(tmp_path)


async def test_missing_repository_folder_fails_start(tmp_path: Path) -> None:
    app = App(make_settings(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        await app.start()
    await app.stop(grace=0)


async def test_repository_with_only_a_broken_model_still_serves(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"")
    async with running_app(tmp_path) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        assert await client.health() == "SERVING"
        assert await client.health("model/broken") == "NOT_SERVING"
        with pytest.raises(Unavailable, match="broken"):
            await client.predict("broken", {"x": np.zeros((1, 1), np.float32)})
