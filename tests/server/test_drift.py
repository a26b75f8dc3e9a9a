"""Drift of the bundled model's live inputs against the reference profile it ships, checked through a real server
and compared with SciPy on the same windows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from tests.conftest import running_app
from vigil.clients import AsyncClient
from vigil.server.app import App
from vigil.server.models.default_models.build_breast_cancer import SEED
from vigil.server.settings import QualitySettings
from vigil.telemetry.quality.drift import DriftStatus
from vigil.telemetry.quality.monitor import VersionQuality

MODEL = "breast_cancer"
SETTINGS = QualitySettings(drift_window_rows=1000, drift_min_rows=100, drift_interval_seconds=3600)


@pytest.fixture(scope="module")
def training() -> tuple[np.ndarray, np.ndarray]:
    """The rows the bundled profile was built from (the build script's split)."""
    data = load_breast_cancer()
    x_train, _, y_train, _ = train_test_split(data.data.astype(np.float32), data.target, test_size=0.25,
                                              random_state=SEED, stratify=data.target)
    return x_train, y_train


def fresh_sample(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    return x[np.random.default_rng(seed).integers(0, len(x), n)]


async def send(client: AsyncClient, x: np.ndarray) -> None:
    for chunk in np.array_split(x, 10):
        await client.predict(MODEL, chunk)


def checked_quality(app: App) -> VersionQuality:
    """The bundled model's quality after folding the calls in and checking this server's own drift."""
    assert app.monitoring is not None and app.monitoring.quality is not None
    monitor = app.monitoring.quality
    monitor.process()
    monitor.check_drift()
    quality = monitor.get(MODEL, "1")
    assert quality is not None
    return quality


def checked(app: App) -> VersionQuality:
    quality = checked_quality(app)
    assert quality.drift is not None and quality.profile is not None
    return quality


def agree_with_scipy(quality: VersionQuality) -> Iterator[str]:
    """Every feature's KS and the chi-square as SciPy computes them on the same live window."""
    assert quality.rows is not None and quality.profile is not None and quality.drift is not None
    window, classes = quality.rows.read(now=time.time(), max_age=3600.0)
    assert len(window) == quality.drift.window_rows
    for column, (feature, result) in enumerate(zip(quality.profile.features, quality.drift.features, strict=True)):
        expected = stats.ks_2samp(feature.sorted_sample, window[:, column], method="asymp")
        assert result.ks_statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert result.ks_pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
        yield feature.name
    observed = np.bincount(classes, minlength=2)
    expected_counts = np.asarray(quality.profile.predicted_prior) * observed.sum()
    chi2 = stats.chisquare(observed, expected_counts)
    assert quality.drift.chi2_statistic == pytest.approx(chi2.statistic, rel=1e-9)
    assert quality.drift.chi2_pvalue == pytest.approx(chi2.pvalue, rel=1e-9)


async def test_a_fresh_sample_of_the_reference_shows_no_drift(model_repo: Path, training: tuple) -> None:
    x, _ = training
    async with running_app(model_repo, quality=SETTINGS) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as c:
        await send(c, fresh_sample(x, 1000, seed=1))
        quality = checked(app)
    assert len(list(agree_with_scipy(quality))) == 30
    drift = quality.drift
    assert drift is not None and drift.window_rows == 1000
    assert max(f.psi for f in drift.features) < 0.1
    assert min(f.ks_pvalue for f in drift.features) > 0.01
    assert drift.chi2_pvalue > 0.01 and drift.worst("psi") is DriftStatus.NO_DRIFT


async def test_a_shifted_feature_and_a_changed_class_mix_are_flagged(model_repo: Path, training: tuple) -> None:
    x, y = training
    shifted = fresh_sample(x, 1000, seed=2)
    shifted[:, 0] += x[:, 0].std()  # "mean radius" one standard deviation up
    async with running_app(model_repo, quality=SETTINGS) as app, AsyncClient(f"127.0.0.1:{app.grpc_port}") as c:
        await send(c, shifted)
        quality = checked(app)
        list(agree_with_scipy(quality))
        radius = quality.drift.features[0] if quality.drift else None
        assert radius is not None and radius.name == "mean radius"
        assert radius.psi > 0.25 and radius.ks_pvalue < 0.01
        assert radius.psi_status is radius.ks_status is DriftStatus.DRIFT
        others = quality.drift.features[1:] if quality.drift else ()
        assert sum(f.psi_status is DriftStatus.DRIFT for f in others) <= 3  # correlated features (perimeter, area)
        # now only malignant cases arrive: the predicted-class mix moves away from the reference's 37% malignant
        await send(c, fresh_sample(x[y == 0], 1000, seed=3))
        quality = checked(app)
        list(agree_with_scipy(quality))
        assert quality.drift is not None and quality.drift.chi2_pvalue < 0.01
        assert quality.drift.chi2_status is DriftStatus.DRIFT and quality.drift.live_class_proportions[0] > 0.9
        stream = c.telemetry(interval_ms=100, models=[MODEL], sections=["models", "quality"])
        frame = await anext(stream)
        await stream.aclose()
    drift = frame.models[0].quality.drift
    assert drift.has_reference and drift.status == "drift" and drift.chi2_status == "drift"
    assert drift.window_rows == 1000 and len(drift.features) == 30
