"""The server's log is one stream in one format: what ONNX Runtime writes on its own (to standard error, in terminal
colours) arrives as JSON lines like every other record."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vigil.clients import Client


def model_with_an_unused_initializer(path: Path) -> None:
    """An Identity whose graph carries an initializer no node reads: ONNX Runtime warns that it removes it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    unused = numpy_helper.from_array(np.ones(3, np.float32), "never_used")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y], [unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, path)


def test_onnx_runtime_messages_are_json_lines_of_the_log(tmp_path: Path) -> None:
    model_with_an_unused_initializer(tmp_path / "models" / "unused" / "1" / "model.onnx")
    log = tmp_path / "server.log"
    env = {**os.environ, "VIGIL_MODELS_DIR": str(tmp_path / "models"), "VIGIL_GRPC_PORT": "0",
           "VIGIL_HTTP_PORT": "0", "VIGIL_STORE__URL": "memory"}
    with log.open("w") as out:  # standard output and error into one file, as `vigil serve >file 2>&1` does
        process = subprocess.Popen([sys.executable, "-m", "vigil.server"], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while not (port := re.search(r"gRPC listening on [\d.]+:(\d+)", log.read_text())):
                assert time.monotonic() < deadline and process.poll() is None, log.read_text()
                time.sleep(0.1)
            with Client(f"127.0.0.1:{port.group(1)}", timeout=10) as client:
                while client.health() != "SERVING":
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
                client.predict("unused", {"x": np.ones((1, 4), np.float32)})
        finally:
            process.terminate()
            code = process.wait(30)
    assert code == 0, log.read_text()
    lines = log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON: nothing raw, no terminal colours
    assert all("\x1b[" not in line for line in lines)
    native = [r for r in records if r.get("logger") == "onnxruntime"]
    assert native and "Removing initializer 'never_used'" in native[0]["message"], records
    assert native[0]["level"] == "WARNING"


def test_a_start_that_fails_is_one_record_with_its_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the gRPC port is already someone else's
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "VIGIL_GRPC_PORT": str(taken.getsockname()[1]), "VIGIL_HTTP_PORT": "0",
               "VIGIL_STORE__URL": "memory"}
        result = subprocess.run([sys.executable, "-m", "vigil.server"], capture_output=True, text=True, env=env,
                                timeout=120, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    [failure] = [r for r in records if r["message"] == "cannot start"]
    assert failure["level"] == "ERROR" and "Failed to bind" in failure.get("exception", "") + str(failure)
