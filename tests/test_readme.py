"""The README's examples work as written, against a server of the bundled model."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import json_format

from tests.conftest import running_app
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.app import App
from vigil.server.settings import DEFAULT_MODELS_DIR

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block_after(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```", README, re.DOTALL)
    assert match, f"README has no block after <!-- {marker} -->"
    return match.group(1)


@pytest.fixture
async def bundled() -> AsyncIterator[App]:
    async with running_app(DEFAULT_MODELS_DIR) as app:
        yield app


async def test_grpcurl_request_is_valid_and_answers_benign(bundled: App) -> None:
    request = json_format.Parse(block_after("readme-grpcurl"), pb.PredictRequest())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bundled.grpc_port}") as channel:
        response = await inference_pb2_grpc.InferenceStub(channel).Predict(request)
    assert list(response.predicted_labels) == ["benign"]


async def test_python_example_runs(bundled: App, monkeypatch: pytest.MonkeyPatch) -> None:
    code = block_after("readme-python").replace("127.0.0.1:8001", f"127.0.0.1:{bundled.grpc_port}")
    monkeypatch.chdir(ROOT)
    out = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})

    await asyncio.to_thread(run)
    lines = out.getvalue().splitlines()
    assert len(lines) == 9  # 8 sample rows and the summary line
    assert all(line.split()[0] in ("malignant", "benign") for line in lines[:8])


async def test_tritonclient_example_runs(bundled: App, tritonclient_python: Path) -> None:
    code = block_after("readme-tritonclient").replace("127.0.0.1:8001", f"127.0.0.1:{bundled.grpc_port}")
    process = await asyncio.create_subprocess_exec(
        str(tritonclient_python), "-c", code, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    rows = np.loadtxt(ROOT / "server/models/default_models/breast_cancer/sample.csv", delimiter=",", skiprows=1,
                      dtype=np.float32)
    session = ort.InferenceSession(str(DEFAULT_MODELS_DIR / "breast_cancer" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"features": rows})[0].argmax(axis=1)
    assert stdout.decode().strip() == str(expected)
