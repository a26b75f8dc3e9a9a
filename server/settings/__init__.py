"""The server's settings in one typed place: `Settings` with its nested groups, each field overridable by a
`VIGIL_`-prefixed environment variable (nested groups with `__`) or a TOML file named by `VIGIL_CONFIG_FILE`.

`settings` holds `Settings` and how it is read, `groups` the nested groups, `alerts` the alert rules, SLOs and
their defaults. Only the wiring layer (`vigil.server.app`, `__main__` and the command line) reads `Settings`;
components below it take plain arguments. Imports nothing from the rest of the server.
"""

from __future__ import annotations

from vigil.server.settings.alerts import (
    DEFAULT_ALERT_RULES,
    DEFAULT_SLOS,
    AlertRuleSettings,
    AlertSettings,
    AnomalySettings,
    SLOSettings,
    TrendSettings,
)
from vigil.server.settings.groups import (
    AuditSettings,
    FleetSettings,
    LimitSettings,
    QualitySettings,
    ReportSettings,
    RolloutSettings,
    SecuritySettings,
    StoreSettings,
    TelemetrySettings,
)
from vigil.server.settings.settings import CONFIG_FILE_VARIABLE, DEFAULT_MODELS_DIR, Settings

__all__ = [
    "CONFIG_FILE_VARIABLE",
    "DEFAULT_ALERT_RULES",
    "DEFAULT_SLOS",
    "DEFAULT_MODELS_DIR",
    "AlertRuleSettings",
    "AlertSettings",
    "AnomalySettings",
    "AuditSettings",
    "FleetSettings",
    "LimitSettings",
    "QualitySettings",
    "ReportSettings",
    "RolloutSettings",
    "SLOSettings",
    "SecuritySettings",
    "Settings",
    "StoreSettings",
    "TelemetrySettings",
    "TrendSettings",
]
