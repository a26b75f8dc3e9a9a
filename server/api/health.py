"""The standard grpc.health.v1 service, overall and per model, kept in step with the model repository."""

from __future__ import annotations

import logging
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

from vigil.server.models.repository import Model

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

INFERENCE_SERVICE = "vigil.v1.Inference"


def model_service(name: str, version: int | None = None) -> str:
    """Health service name of a model (`model/<name>`) or of one version (`model/<name>/<version>`)."""
    return f"model/{name}" if version is None else f"model/{name}/{version}"


class HealthReporter:
    """Owns the health servicer: overall status ("" and the Inference service) and one entry per model.

    >>> reporter = HealthReporter(strict=False)
    >>> repository.add_listener(reporter.on_model_change)
    >>> await reporter.set_started(repository.models)
    """

    def __init__(self, *, strict: bool, peers_ready: Callable[[], bool] | None = None) -> None:
        """`peers_ready`: whether the other processes serving the same port are ready (a worker under `vigil serve
        --workers N` reports SERVING only while every worker is); call `refresh` when its answer changes."""
        self.servicer = health.aio.HealthServicer()
        self._strict = strict
        self._peers_ready = peers_ready
        self._started = False
        self._draining = False
        self._models: dict[str, bool] = {}

    async def on_model_change(self, model: Model) -> None:
        serving = model.default_version is not None
        # A model unloaded on purpose reports NOT_SERVING itself but does not hold strict readiness down.
        self._models[model.name] = serving or model.is_unloaded
        await self.servicer.set(model_service(model.name), SERVING if serving else NOT_SERVING)
        for version in model.versions.values():
            await self.servicer.set(
                model_service(model.name, version.version), SERVING if version.is_ready else NOT_SERVING
            )
        await self._set_overall()

    async def set_loading(self) -> None:
        """Before the port opens: NOT_SERVING until initial loading is over (the servicer starts SERVING)."""
        await self._set_overall()

    async def set_started(self) -> None:
        """Initial loading is over: the server may report SERVING."""
        self._started = True
        await self._set_overall()

    async def set_draining(self) -> None:
        """Shutdown began: everything reports NOT_SERVING from now on."""
        self._draining = True
        await self.servicer.enter_graceful_shutdown()

    @property
    def state(self) -> str:
        """STARTING, SERVING or DRAINING, as the Telemetry stream reports it."""
        return "DRAINING" if self._draining else "SERVING" if self._started else "STARTING"

    @property
    def is_serving(self) -> bool:
        """This process serves, and so do its peers (when it has any)."""
        return self.is_serving_here and (self._peers_ready is None or self._peers_ready())

    @property
    def is_serving_here(self) -> bool:
        """This process alone serves: loaded, not draining, and (when strict) every model ready."""
        if self._draining or not self._started:
            return False
        return all(self._models.values()) if self._strict else True

    async def refresh(self) -> None:
        """Report the overall status again (the peers' readiness changed)."""
        await self._set_overall()

    async def _set_overall(self) -> None:
        status = SERVING if self.is_serving else NOT_SERVING
        for service in ("", INFERENCE_SERVICE):
            await self.servicer.set(service, status)
