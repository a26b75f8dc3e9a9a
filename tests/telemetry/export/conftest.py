"""The OTLP receiver the export tests send to, set as the collector endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.telemetry.export.otlp_receiver import OtlpReceiver


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    await otlp.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    yield otlp
    await otlp.stop()
