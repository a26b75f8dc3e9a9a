"""The drift and accuracy section of the report, over HTTP and through `vigil report`: the same values as the
monitor, a plot per feature."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.clients.cli.test_cli import VIGIL
from tests.conftest import running_app
from tests.server.test_drift import SETTINGS, checked, fresh_sample, send
from tests.server.test_drift import training as training  # a fixture, used by name
from vigil.clients import AsyncClient
from vigil.server.settings import QualitySettings


async def vigil(*args: str) -> tuple[int, str, str]:
    """The console script, run without blocking the event loop the server in this process runs on."""
    process = await asyncio.create_subprocess_exec(VIGIL, *args, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


def quality_section(page: str) -> str:
    """The drift and accuracy part of the HTML report."""
    return page[page.index("<div class='quality'>"):]


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


@pytest.mark.usefixtures("training")
async def test_report_shows_every_test_and_a_plot_per_feature(model_repo: Path, request: pytest.FixtureRequest
                                                              ) -> None:
    x, _ = request.getfixturevalue("training")
    shifted = fresh_sample(x, 500, seed=4)
    shifted[:, 0] += x[:, 0].std()
    async with running_app(model_repo, quality=SETTINGS) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as c:
        await send(c, shifted)
        quality = checked(app)
        prediction = await c.predict("classifier", np.asarray([[1, 0, 0], [0, 1, 0]], np.float32))
        await c.feedback(prediction.request_id, ["red", "blue"])
        status, text = await get(app.http_port, "/report.json?model=breast_cancer")
        _, page = await get(app.http_port, "/report?model=breast_cancer")
        _, classifier_page = await get(app.http_port, "/report?model=classifier")
        missing, message = await get(app.http_port, "/report?model=nope")
        out = Path(str(model_repo)).parent / "report.html"
        cli = await vigil("report", "--http", f"127.0.0.1:{app.http_port}", "-o", str(out))
        cli_missing = await vigil("report", "--http", f"127.0.0.1:{app.http_port}", "--model", "nope", "--json")
    assert status == 200
    [version] = json.loads(text)["quality"]
    assert quality.drift is not None and quality.profile is not None
    radius = version["drift"]["features"][0]
    assert radius["feature"] == "mean radius" and radius["psi"] == pytest.approx(quality.drift.features[0].psi)
    assert radius["psi_status"] == "drift" and radius["ks_status"] == "drift"
    assert radius["reference"] == list(quality.profile.features[0].proportions)
    assert sum(radius["live"]) == pytest.approx(1.0) and len(radius["bins"]) == len(radius["live"])
    assert version["drift"]["status"] == "drift" and version["drift"]["window_rows"] == 500
    assert quality_section(page).count("<svg") == 31  # one per feature and one for the predicted classes
    assert "mean radius" in page and "worst fractal dimension" in page
    assert "No reference profile" in classifier_page and "50.0%" in classifier_page  # one of two rows right
    assert missing == 404 and "'nope' is not monitored" in message
    assert cli == (0, f"wrote {out}\n", "") and quality_section(out.read_text()).count("<svg") == 31
    assert cli_missing[0] != 0 and "404 model 'nope' is not monitored" in cli_missing[2]


async def test_report_says_when_quality_monitoring_is_off(model_repo: Path) -> None:
    async with running_app(model_repo, quality=QualitySettings(enabled=False)) as app:
        status, text = await get(app.http_port, "/report")
    assert status == 200 and "quality monitoring is turned off" in quality_section(text)
