"""Shared fixtures: a model repository of tiny ONNX graphs, a real server on 127.0.0.1 with port 0, and a private
PostgreSQL cluster with a fresh database per test."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from tests import onnx_models
from tests.postgres import PostgresCluster
from tests.postgres import available as postgres_available
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.app import App
from vigil.server.settings import DEFAULT_MODELS_DIR, LimitSettings, Settings

# Test servers, in this process and in subprocesses, keep their prediction log in memory unless a test names a
# store: nothing lands in the working folder.
os.environ.setdefault("VIGIL_STORE__URL", "memory")

CONFIGS = {
    "add": "max_batch_size = 16\nexecution_providers = [\"cpu\"]\n",
    "mixed": "max_batch_size = 16\n",
    "sequence": "max_batch_size = 8\n",
    "fixed": "max_batch_size = 0\n",
    "reshape": "max_batch_size = 8\n[warmup]\nruns = 0\n",
    "slow": "max_batch_size = 1000\nexecution_providers = [\"cpu\"]\n[warmup]\nruns = 0\n",
    "classifier": 'labels = ["red", "green", "blue"]\nprobability_output = "probabilities"\n',
}


def build_repository(root: Path) -> Path:
    """Every test model, plus a copy of the bundled breast-cancer model and one corrupt model."""
    shutil.copytree(DEFAULT_MODELS_DIR / "breast_cancer", root / "breast_cancer",
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    onnx_models.add_model(root / "add" / "1" / "model.onnx", offset=0.0)
    onnx_models.add_model(root / "add" / "2" / "model.onnx", offset=100.0)
    onnx_models.mixed_model(root / "mixed" / "1" / "model.onnx")
    onnx_models.sequence_model(root / "sequence" / "1" / "model.onnx")
    onnx_models.fixed_model(root / "fixed" / "1" / "model.onnx")
    onnx_models.reshape_model(root / "reshape" / "1" / "model.onnx")
    onnx_models.classifier_model(root / "classifier" / "1" / "model.onnx")
    onnx_models.slow_model(root / "slow" / "1" / "model.onnx")
    for name, elem_type in onnx_models.IDENTITY_TYPES.items():
        onnx_models.identity_model(root / f"identity_{name}" / "1" / "model.onnx", elem_type)
    for name, text in CONFIGS.items():
        (root / name / "config.toml").write_text(text)
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    return root


ROOT = Path(__file__).resolve().parent.parent
TRITON_VENV = ROOT / ".venv-tritonclient"


@pytest.fixture(scope="session")
def tritonclient_python() -> Path:
    """tritonclient pins protobuf<7, which the project's generated code cannot use: it gets its own venv."""
    python = TRITON_VENV / "bin" / "python"
    if not python.exists():  # `make test` creates it; a bare `pytest` run creates it here once
        subprocess.run([sys.executable, "-m", "venv", str(TRITON_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "tritonclient[grpc]"], check=True,
                       timeout=900)
    return python


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the session; tests may stop and start it."""
    if not postgres_available():
        pytest.skip("PostgreSQL 15 is not installed (/usr/lib/postgresql/15/bin): `make test` installs Debian's "
                    "postgresql package")
    with PostgresCluster() as cluster:
        yield cluster


_database_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """The URL of a fresh, empty database, so tests never see each other's rows."""
    postgres.start()  # a no-op unless an earlier test left it stopped
    return postgres.create_database(f"test_{next(_database_numbers)}")


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("models"))


def make_settings(models_dir: Path, **overrides: object) -> Settings:
    """Settings for a test server: loopback, free ports, small limits that tests can reach."""
    limits = LimitSettings(max_message_bytes=4 * 1024 * 1024, max_rows_per_request=1000,
                           max_batch_items=50, max_tensor_elements=1_000_000)
    values: dict[str, object] = dict(host="127.0.0.1", grpc_port=0, http_port=0, models_dir=models_dir,
                                     limits=limits, shutdown_grace_seconds=1.0,
                                     shutdown_refuse_seconds=0.0)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_app(models_dir: Path, **overrides: object) -> AsyncIterator[App]:
    """A started App on loopback with free ports, stopped on exit."""
    server = App(make_settings(models_dir, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.5)


@pytest.fixture
async def app(model_repo: Path) -> AsyncIterator[App]:
    async with running_app(model_repo) as server:
        yield server


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> inference_pb2_grpc.InferenceStub:
    return inference_pb2_grpc.InferenceStub(channel)


async def expect(call: object, code: grpc.StatusCode, *fragments: str) -> str:
    """Await a call that must fail with `code` and details holding every fragment; returns the details."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for fragment in fragments:
        assert fragment in details, f"{fragment!r} not in {details!r}"
    return details
