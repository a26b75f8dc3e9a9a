"""A real Prometheus (Debian's package) scrapes the server; promtool accepts the /metrics page."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import urllib.parse
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.conftest import running_app
from vigil.clients import AsyncClient

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="prometheus and promtool come from Debian's prometheus package, which `make test` installs")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_promtool_accepts_the_metrics_page(model_repo: Path) -> None:
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        prediction = await client.predict("breast_cancer", np.zeros((2, 30), np.float32))
        await client.feedback(prediction.request_id, ["benign", "malignant"])  # accuracy, coverage, delay gauges
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{app.http_port}/metrics") as r:
            page = await r.read()
    assert b"vigil_label_delay_seconds{" in page and b"vigil_label_coverage{" in page
    result = subprocess.run([str(PROMTOOL), "check", "metrics"], input=page, capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


async def test_prometheus_scrapes_request_counts_and_durations(model_repo: Path, tmp_path: Path) -> None:
    calls = 25
    async with running_app(model_repo) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        for _ in range(calls):
            await client.predict("breast_cancer", np.zeros((1, 30), np.float32))
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{app.http_port}']\n")
        process = await asyncio.create_subprocess_exec(
            str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            count = await poll(port, 'sum(vigil_requests_total{method="Predict",model="breast_cancer"})', calls)
            histogram = await poll(port, 'sum(vigil_request_duration_seconds_count{method="Predict"})', calls)
        finally:
            process.terminate()
            await process.wait()
    assert count == calls and histogram == calls


async def poll(port: int, query: str, want: float, timeout: float = 60.0) -> float:
    """Ask Prometheus until the query returns `want` (its first scrape comes seconds after start)."""
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(query)}"
    latest = float("nan")
    async with aiohttp.ClientSession() as session:
        for _ in range(int(timeout / 0.5)):
            try:
                async with session.get(url) as response:
                    body = json.loads(await response.text())
                result = body.get("data", {}).get("result", [])
                if result:
                    latest = float(result[0]["value"][1])
                    if latest == want:
                        return latest
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.5)
    return latest
