"""The `vigil` console script, run as a user would: serve in one process, query from others."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vigil.server.settings import DEFAULT_MODELS_DIR

VIGIL = shutil.which("vigil", path=str(Path(sys.executable).parent)) or "vigil"
SAMPLE = DEFAULT_MODELS_DIR / "breast_cancer" / "sample.csv"


class Served:
    def __init__(self, process: subprocess.Popen[str], target: str) -> None:
        self.process = process
        self.target = target

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "VIGIL_TARGET": self.target}
        return subprocess.run([VIGIL, *args], capture_output=True, text=True, env=env, timeout=60)


def start(*args: str, env: dict[str, str] | None = None) -> Served:
    process = subprocess.Popen([VIGIL, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, env={**os.environ, **(env or {})})
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"gRPC listening on ([\d.]+):(\d+)", line)
        if match:
            target = f"127.0.0.1:{match.group(2)}"
            served = Served(process, target)
            while time.monotonic() < deadline:  # wait for the models to load
                if served.run("health").stdout.strip() == "SERVING":
                    return served
                time.sleep(0.1)
        if not line and process.poll() is not None:
            break
    process.kill()
    process.wait()
    process.stdout.close()
    raise AssertionError("vigil serve did not come up")


def stop(served: Served) -> int:
    served.process.send_signal(signal.SIGTERM)
    try:
        return served.process.wait(timeout=30)
    finally:
        if served.process.stdout is not None:
            served.process.stdout.close()


@pytest.fixture(scope="module")
def served(model_repo: Path) -> Iterator[Served]:
    server = start("--models", str(model_repo), "--host", "127.0.0.1", "--port", "0", "--http-port", "0")
    yield server
    assert stop(server) == 0


def test_serve_without_arguments_serves_the_bundled_model() -> None:
    server = start(env={"VIGIL_GRPC_PORT": "0", "VIGIL_HTTP_PORT": "0", "VIGIL_HOST": "127.0.0.1"})
    try:
        listing = server.run("models")
        assert listing.returncode == 0 and "breast_cancer" in listing.stdout and "READY" in listing.stdout
    finally:
        assert stop(server) == 0


def test_predict_from_csv_prints_labels_and_probabilities(served: Served) -> None:
    result = served.run("predict", "--model", "breast_cancer", "--input", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    rows = np.loadtxt(SAMPLE, delimiter=",", skiprows=1, dtype=np.float32)
    session = ort.InferenceSession(str(DEFAULT_MODELS_DIR / "breast_cancer" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    probabilities = session.run(["probabilities"], {"features": rows})[0]
    lines = [line.split() for line in result.stdout.splitlines()[1:]]
    assert len(lines) == len(rows)
    for (_row, label, probability), expected in zip(lines, probabilities, strict=True):
        assert label == ["malignant", "benign"][int(expected.argmax())]
        assert float(probability) == pytest.approx(float(expected.max()), abs=1e-4)


def test_predict_from_headerless_csv_and_json(served: Served, tmp_path: Path) -> None:
    headerless = tmp_path / "rows.csv"
    headerless.write_text("\n".join(SAMPLE.read_text().splitlines()[1:3]) + "\n")
    csv_result = served.run("predict", "--model", "breast_cancer", "--input", str(headerless), "--json")
    assert csv_result.returncode == 0, csv_result.stderr
    document = json.loads(csv_result.stdout)
    assert len(document["predictions"]) == 2 and len(document["outputs"]["probabilities"]) == 2

    two_inputs = tmp_path / "add.json"
    two_inputs.write_text(json.dumps({"a": [[1, 2, 3, 4]], "b": [[10, 20, 30, 40]]}))
    json_result = served.run("predict", "--model", "add", "--version", "1", "--input", str(two_inputs), "--json")
    assert json_result.returncode == 0, json_result.stderr
    assert json.loads(json_result.stdout)["outputs"]["sum"] == [[11.0, 22.0, 33.0, 44.0]]


def test_cli_errors_are_clear(served: Served, tmp_path: Path) -> None:
    unknown = served.run("predict", "--model", "absent", "--input", str(SAMPLE))
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr and "absent" in unknown.stderr
    narrow = tmp_path / "narrow.csv"
    narrow.write_text("1,2,3\n")
    bad = served.run("predict", "--model", "breast_cancer", "--input", str(narrow))
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "features" in bad.stderr
    multi = served.run("predict", "--model", "add", "--input", str(narrow))
    assert multi.returncode != 0 and "takes 2 inputs" in multi.stderr


def test_models_metadata_and_health(served: Served) -> None:
    listing = served.run("models")
    assert listing.returncode == 0
    assert re.search(r"corrupt .*\n\s+1\s+FAILED", listing.stdout)
    metadata = json.loads(served.run("metadata", "breast_cancer").stdout)
    assert metadata["labels"] == ["malignant", "benign"] and metadata["inputs"][0]["shape"] == [-1, 30]
    assert served.run("health").returncode == 0
    corrupt = served.run("health", "--service", "model/corrupt")
    assert corrupt.returncode == 1 and corrupt.stdout.strip() == "NOT_SERVING"


def test_load_and_unload(served: Served) -> None:
    # the shared server's `corrupt` model: it ends as it began, FAILED
    failed = served.run("load", "corrupt")
    assert failed.returncode == 1 and "FAILED_PRECONDITION: model 'corrupt' version 1 failed to load" in failed.stderr
    unloaded = served.run("unload", "corrupt")
    assert unloaded.returncode == 0 and re.search(r"corrupt .*\n\s+1\s+UNLOADED", unloaded.stdout)
    assert served.run("load", "corrupt").returncode == 1
    loaded = served.run("load", "breast_cancer")  # unchanged: nothing to do
    assert loaded.returncode == 0 and re.search(r"breast_cancer +\(default version 1\)\n\s+1\s+READY", loaded.stdout)
    absent = served.run("unload", "absent")
    assert absent.returncode == 1 and "NOT_FOUND" in absent.stderr


def test_health_of_an_unreachable_server_fails() -> None:
    result = subprocess.run([VIGIL, "health", "--target", "127.0.0.1:1", "--timeout", "2"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr


def test_watch_shows_frames_with_the_traffic(served: Served) -> None:
    for _ in range(3):
        assert served.run("predict", "--model", "breast_cancer", "--input", str(SAMPLE)).returncode == 0
    shown = served.run("watch", "--model", "breast_cancer", "--model", "add", "--interval", "0.2", "--frames", "3")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.count("frames ") == 3 and "frames 3 (dropped 0)" in out
    assert "breast_cancer" in out and "READY" in out and "SERVING" in out and "identity_int8" not in out
    assert "alerts firing" in out and "recent events" in out


def test_watch_rejects_an_interval_out_of_range(served: Served) -> None:
    shown = served.run("watch", "--interval", "0.01", "--frames", "1")
    assert shown.returncode != 0 and "interval_ms" in shown.stderr


def test_profile_builds_a_reference_profile_from_a_csv(model_repo: Path, tmp_path: Path) -> None:
    one_hot = {"red": "1,0,0", "green": "0,1,0", "blue": "0,0,1"}
    # 30 rows of each class predicted right (the model predicts each row's one-hot class), then 30 rows it predicts
    # red that are truly blue
    rows = [f"{one_hot[t]},{t}\n" for t in ("red", "green", "blue") for _ in range(30)]
    rows += [f"{one_hot['red']},blue\n"] * 30
    data = tmp_path / "reference.csv"
    data.write_text("a,b,c,label\n" + "".join(rows))
    out = tmp_path / "profile.json"
    result = subprocess.run([VIGIL, "profile", "--models", str(model_repo), "--model", "classifier", "--data",
                             str(data), "--label-column", "label", "--output", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: 120 rows, 3 features, reference accuracy 0.750" in result.stdout
    profile = json.loads(out.read_text())
    assert [f["name"] for f in profile["features"]] == ["a", "b", "c"] and profile["labels"] == ["red", "green", "blue"]
    assert profile["predicted_prior"] == pytest.approx([60 / 120, 30 / 120, 30 / 120])
    assert profile["label_prior"] == pytest.approx([30 / 120, 30 / 120, 60 / 120])
    assert profile["calibration"] is not None and profile["accuracy"] == pytest.approx(0.75)


def test_profile_errors_are_clear(model_repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "reference.csv"
    data.write_text("a,b,c\n1,0,0\n")

    def profile(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VIGIL, "profile", "--models", str(model_repo), "--data", str(data), *args],
                              capture_output=True, text=True, timeout=120)

    missing = profile("--model", "classifier", "--label-column", "truth")
    assert missing.returncode != 0 and "has no column 'truth'" in missing.stderr
    not_classifier = profile("--model", "add")
    assert not_classifier.returncode != 0 and "is not a classifier" in not_classifier.stderr


def test_csv_errors_name_the_line_and_column_without_usage_text(served: Served, model_repo: Path,
                                                                tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    header = ",".join(f"f{i}" for i in range(30))
    good = ",".join(["1.0"] * 30)
    rows.write_text(f"{header}\n{good}\n{good.replace('1.0', 'n/a', 1)}\n")
    bad = served.run("predict", "--model", "breast_cancer", "--input", str(rows))
    assert bad.returncode == 1
    assert f"{rows}, line 3, column 1 ('f0'): 'n/a' is not a number" in bad.stderr
    assert "Usage:" not in bad.stderr
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(f"{good}\n1.0,2.0\n")
    short = served.run("predict", "--model", "breast_cancer", "--input", str(ragged))
    assert short.returncode == 1 and "line 2: 2 values where the first row has 30" in short.stderr
    assert "Usage:" not in short.stderr

    reference = tmp_path / "reference.csv"
    reference.write_text("a,b,c,label\n1,0,0,red\n0,oops,0,green\n")
    profiled = subprocess.run([VIGIL, "profile", "--models", str(model_repo), "--model", "classifier", "--data",
                               str(reference), "--label-column", "label"], capture_output=True, text=True, timeout=120)
    assert profiled.returncode == 1
    assert f"{reference}, line 3, column 2 ('b'): 'oops' is not a number" in profiled.stderr
    assert "Usage:" not in profiled.stderr


def test_the_readme_profile_example_runs_as_written_and_keeps_the_shipped_profile(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    command = re.search(r"\.venv/bin/vigil (profile .*?)\s+#", readme.replace("\\\n", " "), flags=re.S)
    assert command is not None
    args = command.group(1).split()
    assert "train.csv" in " ".join(args)
    root = Path(__file__).resolve().parents[3]
    shipped = DEFAULT_MODELS_DIR / "breast_cancer" / "1" / "profile.json"
    before = shipped.read_bytes()
    result = subprocess.run([VIGIL, *args], capture_output=True, text=True, timeout=120, cwd=root)
    written = root / "profile.json"
    try:
        assert result.returncode == 0, result.stderr
        assert "wrote profile.json: 426 rows, 30 features, reference accuracy" in result.stdout
        assert "warning" not in result.stderr
        assert json.loads(written.read_text())["features"] == json.loads(before)["features"]
    finally:
        written.unlink(missing_ok=True)
    # without --output the target is the shipped profile: refused unless --overwrite
    refused = subprocess.run([VIGIL, "profile", "--model", "breast_cancer", "--data", str(root / args[4]),
                              "--label-column", "label"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    assert shipped.read_bytes() == before


def test_profile_warns_when_the_rows_are_too_few_for_the_bins(model_repo: Path, tmp_path: Path) -> None:
    data = tmp_path / "few.csv"
    data.write_text("a,b,c\n" + "1,0,0\n0,1,0\n0,0,1\n" * 5)
    result = subprocess.run([VIGIL, "profile", "--models", str(model_repo), "--model", "classifier", "--data",
                             str(data), "--output", str(tmp_path / "p.json")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "warning: 15 rows for 10 bins per feature" in result.stderr


def test_with_nothing_listening_the_cli_suggests_vigil_serve() -> None:
    for command in (["models"], ["predict", "--model", "breast_cancer", "--input", str(SAMPLE)], ["watch"]):
        result = subprocess.run([VIGIL, *command, "--target", "127.0.0.1:1"], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 1, command
        assert "127.0.0.1:1" in result.stderr and "`vigil serve`" in result.stderr, result.stderr


def test_watch_says_so_when_the_server_goes_away(model_repo: Path) -> None:
    served = start("--models", str(model_repo), "--host", "127.0.0.1", "--port", "0", "--http-port", "0")
    env = {**os.environ, "VIGIL_TARGET": served.target}
    watcher = subprocess.Popen([VIGIL, "watch", "--interval", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    try:
        time.sleep(2.0)
        assert stop(served) == 0
        _, stderr = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 1
    assert f"the server at {served.target} went away" in stderr, stderr
