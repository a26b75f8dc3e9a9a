"""The GPU path's data movement: IOBinding (inputs to the device once, outputs back once) and fixed buffers bound
once (what CUDA graph capture needs). Both run on the CPU provider too, so their correctness is checked on every
machine; the tests marked `gpu` check the CUDA provider itself and skip, saying why, where there is none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import onnx_models
from tests.conftest import running_app
from vigil.server.models.config import ModelConfig
from vigil.server.models.pinned_buffers import HostStaging, pinned_memory
from vigil.server.models.repository import ModelRepository, VersionState
from vigil.server.models.sessions import ModelSession


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("device_io")
    onnx_models.add_model(root / "add" / "1" / "model.onnx", offset=1.5)
    onnx_models.fixed_model(root / "fixed" / "1" / "model.onnx")
    onnx_models.classifier_model(root / "classifier" / "1" / "model.onnx")
    onnx_models.reshape_model(root / "reshape" / "1" / "model.onnx")
    onnx_models.gather_model(root / "gather" / "1" / "model.onnx")
    return root


def session(models: Path, name: str, **config: object) -> ModelSession:
    return ModelSession(models / name / "1" / "model.onnx", ModelConfig.model_validate(
        {"execution_providers": ["cpu"], **config}))


def test_io_binding_gives_what_a_plain_run_gives(models: Path) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(5, 4)).astype(np.float32)
    plain = session(models, "add", io_binding="off")
    bound = session(models, "add", io_binding="on")
    assert not plain.io_binding and bound.io_binding and bound.device == ("cpu", 0)
    for outputs in (("sum", "product"), ("product",)):
        want = plain.run({"a": a, "b": b}, outputs)
        got = bound.run({"a": a, "b": b}, outputs)
        assert list(got) == list(outputs)
        for name in outputs:
            np.testing.assert_array_equal(got[name], want[name])
    np.testing.assert_allclose(bound.run({"a": a, "b": b}, ("sum",))["sum"], a + b + 1.5, rtol=1e-6)
    # `auto` binds only on a GPU provider
    assert not session(models, "add").io_binding


def test_fixed_buffers_are_rewritten_on_every_run(models: Path) -> None:
    fixed = session(models, "fixed", max_batch_size=0, cuda_graph=True)
    buffers = fixed._fixed
    assert buffers is not None
    addresses = {name: value.data_ptr() for name, value in buffers._inputs.items()}
    for value in (1.0, -3.0, 7.25):
        x = np.full((2, 2), value, np.float32) + np.arange(4, dtype=np.float32).reshape(2, 2)
        out = fixed.run({"x": x}, ("y",))["y"]
        np.testing.assert_array_equal(out, x * 2)
        out[0, 0] = 999.0  # the caller's copy: never the bound buffer itself
    np.testing.assert_array_equal(fixed.run({"x": np.ones((2, 2), np.float32)}, ("y",))["y"], np.full((2, 2), 2.0))
    assert {name: value.data_ptr() for name, value in buffers._inputs.items()} == addresses  # the same memory


async def test_cuda_graph_needs_fixed_shapes_and_says_so(models: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    onnx_models.add_model(root / "add" / "1" / "model.onnx")
    (root / "add" / "config.toml").write_text('cuda_graph = true\nexecution_providers = ["cpu"]\n')
    repository = ModelRepository(root)
    await repository.load_all()
    version = repository.get("add").versions[1]
    assert version.state is VersionState.FAILED
    assert "cuda_graph needs fixed shapes" in version.reason and "'a'" in version.reason
    await repository.close()


async def test_a_server_with_binding_and_fixed_buffers_answers_right(models: Path, tmp_path: Path) -> None:
    from vigil.clients import AsyncClient

    root = tmp_path / "repo"
    onnx_models.add_model(root / "add" / "1" / "model.onnx", offset=1.5)
    (root / "add" / "config.toml").write_text('io_binding = "on"\nexecution_providers = ["cpu"]\n')
    onnx_models.fixed_model(root / "fixed" / "1" / "model.onnx")
    (root / "fixed" / "config.toml").write_text(
        'max_batch_size = 0\ncuda_graph = true\nexecution_providers = ["cpu"]\n')
    async with running_app(root) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}", timeout=10) as client:
        a = np.arange(8, dtype=np.float32).reshape(2, 4)
        result = await client.predict("add", {"a": a, "b": a})
        np.testing.assert_allclose(result.outputs["sum"], 2 * a + 1.5)
        for value in (1.0, 2.0):
            x = np.full((2, 2), value, np.float32)
            np.testing.assert_array_equal((await client.predict("fixed", x)).outputs["y"], 2 * x)


def staged(models: Path, name: str, **config: object) -> ModelSession:
    """A session with IOBinding through host staging buffers: the GPU path's logic, in ordinary CPU memory."""
    made = session(models, name, io_binding="on", **config)
    made._staging = HostStaging(None, max_shapes=2)
    return made


def test_staged_buffers_give_what_a_plain_run_gives_and_are_reused(models: Path) -> None:
    plain, bound = session(models, "add", io_binding="off"), staged(models, "add")
    staging = bound._staging
    assert staging is not None and not staging.pinned
    rng = np.random.default_rng(2)
    for rows in (5, 5, 5, 3, 5, 7, 3):
        a, b = rng.normal(size=(rows, 4)).astype(np.float32), rng.normal(size=(rows, 4)).astype(np.float32)
        got, want = bound.run({"a": a, "b": b}, ("sum", "product")), plain.run({"a": a, "b": b}, ("sum", "product"))
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
        got["sum"][:] = 0  # the caller's copy, never the reused buffer
    # 4 buffers (2 inputs, 2 outputs) for 5 rows, 4 for 3, 4 for 7; 5 rows came back after 3 without a new one,
    # and 3 after 7 needed one again: at most 2 shapes are kept per name
    assert staging.allocations == 16
    assert all(len(kept) <= 2 for kept in staging._buffers.values())


def test_outputs_whose_shape_the_signature_cannot_tell_come_back_unstaged(models: Path) -> None:
    reshape = staged(models, "reshape", max_batch_size=8)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    y = reshape.run({"x": x}, ("y",))["y"]  # [4, 3]: its first dimension is not the rows
    np.testing.assert_array_equal(y, x.reshape(4, 3))
    assert not reshape._stage_outputs
    np.testing.assert_array_equal(reshape.run({"x": x}, ("y",))["y"], x.reshape(4, 3))
    # a model that fails on its own keeps staging its outputs
    gather = staged(models, "gather")
    with pytest.raises(Exception, match="Gather|out of|bounds"):
        gather.run({"index": np.array([[7]], np.int64)}, ("value",))
    assert gather._stage_outputs
    np.testing.assert_array_equal(gather.run({"index": np.array([[2]], np.int64)}, ("value",))["value"], [[12.0]])


def test_there_is_no_pinned_memory_without_the_cuda_provider() -> None:
    import onnxruntime as ort

    if any(d.ep_name == "CUDAExecutionProvider" for d in ort.get_ep_devices()):
        pytest.skip("this machine has the CUDA provider; the gpu-marked test checks its pinned memory")
    assert pinned_memory(0) is None


def cuda_session(models: Path, name: str, **config: object) -> ModelSession:
    made = ModelSession(models / name / "1" / "model.onnx", ModelConfig.model_validate(
        {"execution_providers": ["cuda", "cpu"], **config}))
    if made.providers[0] != "CUDAExecutionProvider":
        pytest.skip("needs ONNX Runtime's CUDA provider (an NVIDIA GPU with its driver and CUDA libraries); "
                    f"this machine runs {made.providers[0]}")
    return made


@pytest.mark.gpu
def test_cuda_binding_leaves_outputs_on_the_gpu_until_copied_once(models: Path) -> None:
    gpu = cuda_session(models, "add")
    assert gpu.io_binding and gpu.device == ("cuda", 0)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(64, 4)).astype(np.float32), rng.normal(size=(64, 4)).astype(np.float32)
    want = session(models, "add").run({"a": a, "b": b}, ("sum", "product"))
    got = gpu.run({"a": a, "b": b}, ("sum", "product"))
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_cuda_graph_replays_with_new_inputs(models: Path) -> None:
    gpu = cuda_session(models, "fixed", max_batch_size=0, cuda_graph=True)
    for value in (1.0, 5.0, -2.0):  # the first run captures, the later ones replay
        x = np.full((2, 2), value, np.float32)
        np.testing.assert_array_equal(gpu.run({"x": x}, ("y",))["y"], 2 * x)


@pytest.mark.gpu
def test_cuda_inputs_and_outputs_go_through_pinned_host_buffers(models: Path) -> None:
    gpu = cuda_session(models, "classifier")
    staging = gpu._staging
    assert staging is not None and staging.pinned, "ONNX Runtime offered no pinned memory for the CUDA device"
    assert "pinned" in str(staging.memory_info.name).lower()
    rng = np.random.default_rng(3)
    want_session = session(models, "classifier")
    for rows in (1, 8, 64, 8):
        x = rng.normal(size=(rows, 3)).astype(np.float32)
        got, want = gpu.run({"features": x}, ("probabilities", "label")), want_session.run(
            {"features": x}, ("probabilities", "label"))
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got["label"], want["label"])
    assert staging.allocations == 3 * 4  # input and two outputs, for 1, 8 and 64 rows (8 again reused)
