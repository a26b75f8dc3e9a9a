"""The built wheel installs one import namespace, `vigil`, and nothing else at the top of site-packages.

The wheel is built from this checkout and installed, without its dependencies, into a fresh virtual environment
that borrows the test environment's third-party packages through a path file (which does not run that
environment's own path files, so the editable install of this checkout stays out of sight).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("protos", "server", "telemetry", "clients")
"""The repository's package folders, each installed as `vigil.<folder>`."""


def wheel_name(source: Path) -> str:
    """Where a source file of this checkout lands in the wheel."""
    relative = source.relative_to(ROOT)
    if relative.parts[:2] == ("clients", "root"):
        return "/".join(("vigil", *relative.parts[2:]))
    return "/".join(("vigil", *relative.parts))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir",
         str(out), str(ROOT)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("vigil-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its bin folder."""
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
         str(wheel)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return env_dir / "bin"


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_wheel_holds_only_the_vigil_namespace_and_every_source_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/", 1)[0] for name in names}
    assert "vigil" in tops
    assert all(top == "vigil" or re.fullmatch(r"vigil-[\w.]+\.dist-info", top) for top in tops), tops
    sources = {wheel_name(p) for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert sources - names == set(), "source modules missing from the wheel (a package not listed in pyproject.toml)"
    assert "vigil/__init__.py" in names
    assert "vigil/server/models/default_models/breast_cancer/1/model.onnx" in names


@pytest.mark.parametrize("name", ["server", "telemetry", "clients", "protos"])
def test_the_old_top_level_names_are_not_importable(installed: Path, tmp_path: Path, name: str) -> None:
    result = run(installed, tmp_path, "python", "-c", f"import {name}")
    assert result.returncode != 0
    assert f"No module named '{name}'" in result.stderr


def test_vigil_imports_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    script = (
        "import vigil, vigil.server.app, vigil.telemetry.export.providers, vigil.protos.vigil.v1.inference_pb2\n"
        "from vigil import AsyncClient, Client\n"
        "from vigil.clients import Client as Same\n"
        "assert Client is Same\n"
        "print(vigil.__file__)\n"
    )
    result = run(installed, tmp_path, "python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(installed.parent)


def test_the_cli_lists_client_and_server_commands(installed: Path, tmp_path: Path) -> None:
    result = run(installed, tmp_path, "vigil", "--help")
    assert result.returncode == 0, result.stderr
    commands = set(re.findall(r"^  (\w+)\s", result.stdout, flags=re.M))
    assert {"serve", "profile", "models", "predict", "rollout", "watch", "health"} <= commands


def test_the_installed_server_serves_its_bundled_model(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(VIGIL_GRPC_PORT="0", VIGIL_HTTP_PORT="0", VIGIL_HOST="127.0.0.1", VIGIL_LOG_LEVEL="WARNING")
    process = subprocess.Popen([str(installed / "python"), "-m", "vigil.server"], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        port = next((m.group(1) for line in process.stdout
                     if (m := re.search(r"gRPC listening on [\d.]+:(\d+)", line))), None)
        assert port is not None, f"the server did not start (exit {process.poll()})"
        result = run(installed, tmp_path, "vigil", "models", "--target", f"127.0.0.1:{port}")
        assert result.returncode == 0, result.stderr
        assert "breast_cancer" in result.stdout and "READY" in result.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        if process.stdout is not None:
            process.stdout.close()
