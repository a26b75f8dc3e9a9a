"""On a host where CUDA cannot run, the server says so once, in its own log format, and ONNX Runtime is never asked
for the CUDA provider (which would print its own coloured error for every model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vigil.server.models.cuda import cuda_unavailable_reason

VIGIL = str(Path(sys.executable).parent / "vigil")


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="this host can run CUDA: the CPU-host message is "
                                                                "not expected here")
def test_a_cpu_host_logs_one_line_of_its_own_and_nothing_from_onnxruntime(model_repo: Path) -> None:
    env = {**os.environ, "VIGIL_LOG_LEVEL": "INFO", "VIGIL_GRPC_PORT": "0", "VIGIL_HTTP_PORT": "0",
           "VIGIL_MODELS_DIR": str(model_repo)}
    process = subprocess.Popen([VIGIL, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "quality monitored" in line or len(lines) > 200:  # the models have loaded
                break
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    records = [json.loads(line) for line in lines]  # every line of the log is JSON
    cuda = [r for r in records if r["message"].startswith("CUDA is not used")]
    assert len(cuda) == 1 and cuda[0]["level"] == "INFO"
    assert sum("ready in" in r["message"] for r in records) >= 2  # several models loaded, none asked for CUDA
    assert "\x1b[" not in stderr and "CUDAExecutionProvider" not in stderr, stderr
