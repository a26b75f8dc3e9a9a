"""Settings: one typed place, VIGIL_* environment overrides, nested groups with `__`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from vigil.server.settings import DEFAULT_MODELS_DIR, Settings

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_defaults_serve_the_bundled_model() -> None:
    settings = Settings()
    assert settings.grpc_port == 8001 and settings.http_port == 8002
    assert settings.host == "127.0.0.1"  # plaintext and open: loopback until told otherwise
    assert settings.models_dir == DEFAULT_MODELS_DIR
    assert (DEFAULT_MODELS_DIR / "breast_cancer" / "1" / "model.onnx").is_file()


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_GRPC_PORT", "9001")
    monkeypatch.setenv("VIGIL_LIMITS__MAX_ROWS_PER_REQUEST", "12")
    settings = Settings()
    assert settings.grpc_port == 9001 and settings.limits.max_rows_per_request == 12
    assert Settings(grpc_port=0).grpc_port == 0  # arguments beat the environment


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="grpc_port"):
        Settings(grpc_port=70000)
    with pytest.raises(ValidationError, match="unknown_option"):
        Settings(unknown_option=1)  # type: ignore[call-arg]
    monkeypatch.setenv("VIGIL_HTTP_PORT", "eighty")
    with pytest.raises(ValidationError, match="http_port"):
        Settings()


def test_the_documented_anomaly_and_trend_rules_load_from_a_config_file(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    text = (DOCS / "quality.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- alert-kinds-example -->\s*```toml\n(.*?)```", text, re.DOTALL)
    assert match, "docs/quality.md has no TOML block after <!-- alert-kinds-example -->"
    config = tmp_path / "vigil.toml"
    config.write_text(match.group(1), encoding="utf-8")
    monkeypatch.setenv("VIGIL_CONFIG_FILE", str(config))
    anomaly, trend = Settings().alerts.rules
    assert (anomaly.kind, anomaly.threshold, anomaly.for_seconds) == ("anomaly", None, 60)
    assert anomaly.anomaly is not None
    assert (anomaly.anomaly.method, anomaly.anomaly.k, anomaly.anomaly.window, anomaly.anomaly.direction) == (
        "mad", 4, "30m", "above")
    assert (trend.kind, trend.op, trend.threshold) == ("trend", ">", 500)
    assert trend.trend is not None and (trend.trend.window, trend.trend.horizon) == ("15m", "10m")


def test_rule_kinds_from_the_environment_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    rule = {"name": "Drop", "signal": "accuracy", "kind": "anomaly", "anomaly": {"window": 60, "direction": "below"}}
    monkeypatch.setenv("VIGIL_ALERTS__RULES", json.dumps([rule]))
    [loaded] = Settings().alerts.rules
    assert loaded.anomaly is not None and (loaded.anomaly.window, loaded.anomaly.direction) == (60, "below")
    monkeypatch.setenv("VIGIL_ALERTS__RULES", json.dumps([{**rule, "threshold": 0.9}]))
    with pytest.raises(ValidationError, match="alert rule Drop: an anomaly rule compares the signal with its own "
                                              "band and takes no threshold"):
        Settings()


def test_the_old_report_state_file_settings_are_ignored_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_REPORTS__STATE_FILE", "/var/lib/vigil/history.json")
    with pytest.warns(FutureWarning, match="reports.state_file is no longer used"):
        settings = Settings()
    assert settings.reports.retention_days == 7.0


def test_the_fleet_lease_outlasts_two_ticks() -> None:
    with pytest.raises(ValueError, match="must be at least two ticks"):
        Settings(fleet={"tick_seconds": 2.0, "lease_seconds": 3.0})
    assert Settings(workers="auto").worker_count >= 1
    with pytest.raises(ValueError, match="workers must be from 1 to 64, or auto"):
        Settings(workers=0)
