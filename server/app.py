"""Wiring: builds the gRPC and HTTP servers from Settings, starts them, loads models, and shuts down in order."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

from protos.inference import grpc_service_pb2, grpc_service_pb2_grpc
from protos.vigil.v1 import inference_pb2
from protos.vigil.v1.telemetry_pb2 import TelemetryEvent
from server.dataplane import DataPlane
from server.health import HealthReporter
from server.monitoring import Monitoring
from server.oip import OpenInferenceServicer, server_version
from server.registry import Model, ModelRepository, ModelVersion
from server.servicer import InferenceServicer, add_inference_servicer
from server.settings import Settings
from server.stream_source import ModelEvents, snapshot_reader
from server.validation import Limits
from server.web import WebServer, build_web_app
from telemetry.aggregates import SCOPE, Histogram
from telemetry.batches import BatchTelemetry
from telemetry.frames import Snapshot
from telemetry.gauges import register_process_gauges, register_serving_gauges
from telemetry.gpu import gpu_reader, register_gpu_gauges
from telemetry.hub import TelemetryHub
from telemetry.instruments import Instruments
from telemetry.interceptor import TelemetryInterceptor
from telemetry.providers import TelemetryProviders, build_providers
from telemetry.quality_readings import quality_sections

logger = logging.getLogger(__name__)


def build_server(
    settings: Settings, services: list[Any], interceptor: TelemetryInterceptor | None = None
) -> tuple[grpc.aio.Server, int]:
    """A gRPC server with the given `(add_to_server, servicer)` pairs, bound to host:port; returns the real port."""
    limit = settings.limits.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
    )
    for add, servicer in services:
        add(servicer, server if interceptor is None else interceptor.instrument(server))
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"could not bind gRPC to {settings.host}:{settings.grpc_port}")
    return server, port


class App:
    """The whole server: model repository, gRPC services, HTTP endpoint.

    >>> app = App(Settings(grpc_port=0, http_port=0))
    >>> await app.start()          # binds, serves, then loads models
    >>> await app.stop()
    """

    def __init__(self, settings: Settings, *, span_exporters: Sequence[SpanExporter] = ()) -> None:
        self.settings = settings
        self.repository = ModelRepository(settings.models_dir, load_workers=settings.load_workers)
        self.health = HealthReporter(strict=settings.strict_readiness)
        self.repository.add_listener(self.health.on_model_change)
        limits = Limits(
            max_rows_per_request=settings.limits.max_rows_per_request,
            max_tensor_elements=settings.limits.max_tensor_elements,
        )
        self.dataplane = DataPlane(self.repository, limits)
        self.metrics_registry = CollectorRegistry()
        self.telemetry: TelemetryProviders | None = None
        self.telemetry_hub: TelemetryHub | None = None
        self.has_gpu_metrics = False
        self.monitoring: Monitoring | None = None
        self._interceptor: TelemetryInterceptor | None = None
        if settings.telemetry.enabled:
            self._build_telemetry(span_exporters)
        self._grpc: grpc.aio.Server | None = None
        self._web: WebServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    def _build_telemetry(self, span_exporters: Sequence[SpanExporter]) -> None:
        config = self.settings.telemetry
        self.telemetry = providers = build_providers(service_version=server_version(), span_exporters=span_exporters)
        self.metrics_registry.register(providers.prometheus)
        instruments = Instruments(providers.meter_provider.get_meter(SCOPE))
        providers.include(instruments.aggregates)
        tracing = providers.call_tracing if config.tracing else None
        interceptor = TelemetryInterceptor(instruments, tracing=tracing, slow_seconds=config.slow_request_seconds)
        self._interceptor = interceptor
        register_serving_gauges(instruments, **self._serving_readings(),
                                in_flight=lambda: [({"method": m}, float(n)) for m, n in interceptor.in_flight.items()])
        register_process_gauges(instruments)
        self.has_gpu_metrics = register_gpu_gauges(instruments)
        bounds = {h.name: h.bounds for h in instruments.aggregates.members if isinstance(h, Histogram)}

        def read() -> Snapshot:  # the hub and the monitors refer to each other; the reader is bound below
            return take_snapshot()

        self.telemetry_hub = hub = TelemetryHub(read, bounds, max_subscribers=config.max_subscribers)
        self.monitoring = monitoring = Monitoring(
            self.settings.quality, self.settings.alerts, instruments, self.repository, hub,
            duration_bounds=instruments.request_duration.bounds)
        self.repository.add_listener(monitoring.on_model_change)
        hooks = [BatchTelemetry(instruments, tracing.sampled if tracing else None).on_batch]
        if monitoring.quality is not None:
            hooks.append(monitoring.quality.on_batch)

        async def hook_batchers(model: Model) -> None:  # a reloaded version has a new batcher to hook
            for version in model.versions.values():
                if version.batcher is not None:
                    for hook in hooks:
                        version.batcher.add_hook(hook)

        self.repository.add_listener(hook_batchers)
        take_snapshot = snapshot_reader(
            self.repository, self.health, instruments.aggregates,
            in_flight=lambda: sum(interceptor.in_flight.values()), gpus=gpu_reader(),
            quality=partial(quality_sections, monitoring.quality) if monitoring.quality is not None else None,
            alerts=monitoring.alert_states)
        self.repository.add_listener(ModelEvents(hub).on_model_change)

    def _serving_readings(self) -> dict[str, Callable[[], list[tuple[dict[str, str], float]]]]:
        def versions() -> list[tuple[dict[str, str], ModelVersion]]:
            return [({"model": v.name, "version": str(v.version)}, v)
                    for m in self.repository.models for v in m.versions.values()]

        return {
            "queue_depth": lambda: [(k, float(v.batcher.queue_depth)) for k, v in versions() if v.batcher],
            "running": lambda: [(k, float(v.batcher.in_flight)) for k, v in versions() if v.batcher],
            "model_ready": lambda: [(k, 1.0 if v.is_ready else 0.0) for k, v in versions()],
            "load_seconds": lambda: [(k, v.load_seconds) for k, v in versions() if v.is_ready],
            "rows": lambda: [(k, float(v.batcher.statistics.inferences)) for k, v in versions() if v.batcher],
        }

    async def start(self) -> None:
        """Listen, then load every model; health reports SERVING once loading is over."""
        await self.listen()
        await self.load_models()

    async def listen(self) -> None:
        """Bind and serve gRPC and HTTP; health reports NOT_SERVING until `load_models` finishes."""
        self.repository.scan()
        servicer = InferenceServicer(self.dataplane, max_batch_items=self.settings.limits.max_batch_items,
                                     hub=self.telemetry_hub,
                                     quality=self.monitoring.quality if self.monitoring is not None else None)
        self._grpc, self.grpc_port = build_server(
            self.settings,
            [
                (add_inference_servicer, servicer),
                (health_pb2_grpc.add_HealthServicer_to_server, self.health.servicer),
                (grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
                 OpenInferenceServicer(self.dataplane, self.health)),
            ],
            self._interceptor,
        )
        reflection.enable_server_reflection(
            [
                inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name,
                grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._grpc,
        )
        await self.health.set_loading()
        if self.telemetry_hub is not None:
            await self.telemetry_hub.start()
        if self.monitoring is not None:
            await self.monitoring.start()
        await self._grpc.start()
        self._web = WebServer(
            build_web_app(self.metrics_registry, is_ready=lambda: self.health.is_serving, hub=self.telemetry_hub,
                          quality=self.monitoring.quality if self.monitoring is not None else None),
            self.settings.host,
            self.settings.http_port,
        )
        await self._web.start()
        self.http_port = self._web.port
        logger.info("gRPC listening on %s:%d, HTTP on %s:%d", self.settings.host, self.grpc_port,
                    self.settings.host, self.http_port)

    async def load_models(self) -> None:
        await self.repository.load_all()
        await self.health.set_started()

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight calls finish within `grace` seconds, then release everything."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        await self.health.set_draining()
        if self.monitoring is not None:
            await self.monitoring.close()
        if self.telemetry_hub is not None:  # a last frame with the event, then the streams end
            self.telemetry_hub.publish(TelemetryEvent.SERVER_DRAINING, message="the server is shutting down")
            await self.telemetry_hub.close()
        if self._grpc is not None:
            await self._grpc.stop(grace)
        if self._web is not None:
            await self._web.stop()
        if self.telemetry is not None:  # flush while the models it reports on are still there
            await asyncio.to_thread(self.telemetry.shutdown)
        self.repository.close()


async def serve(settings: Settings, *, announce: bool = True) -> int:
    """Run until SIGINT or SIGTERM; returns the process exit code."""
    app = App(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.listen()
    if announce:
        # Printed, not only logged, so scripts and tests can read the ports chosen for port 0.
        print(f"vigil: gRPC listening on {settings.host}:{app.grpc_port}", flush=True)
        print(f"vigil: HTTP listening on {settings.host}:{app.http_port}", flush=True)
    await app.load_models()
    await stop.wait()
    logger.info("shutting down")
    await app.stop()
    return 0
