"""Wiring: builds the gRPC and HTTP servers from Settings, starts them, loads models, and shuts down in order."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

from vigil.protos.inference import grpc_service_pb2, grpc_service_pb2_grpc
from vigil.protos.vigil.v1 import inference_pb2
from vigil.protos.vigil.v1.telemetry_pb2 import TelemetryEvent
from vigil.server.api.handler_wrapping import HandlerWrap, WrappingServer
from vigil.server.api.health import HealthReporter
from vigil.server.api.native_servicer import InferenceServicer, add_inference_servicer
from vigil.server.api.oip_servicer import OpenInferenceServicer, server_version
from vigil.server.api.telemetry_source import ModelEvents, snapshot_reader
from vigil.server.fleet.member import Fleet
from vigil.server.inference.dataplane import DataPlane
from vigil.server.inference.outcomes import Outcomes
from vigil.server.inference.validation import Limits
from vigil.server.models.folder_watch import RepositoryWatcher
from vigil.server.models.repository import Model, ModelRepository, ModelVersion
from vigil.server.monitoring import Monitoring, open_configured_store
from vigil.server.rollouts.guard import DEFAULT_WINDOW_SECONDS
from vigil.server.rollouts.splits import Rollouts
from vigil.server.security.audit import AuditLog
from vigil.server.security.credentials import grpc_credentials, http_ssl_context, token_table
from vigil.server.security.gate import CallGate
from vigil.server.settings import Settings
from vigil.server.store.base import SharedState, Store
from vigil.server.web.http_port import HttpAccess, WebServer, build_web_app
from vigil.server.web.reports import SAVE_SECONDS as REPORT_SAVE_SECONDS
from vigil.server.web.reports import alert_listener, build_recorder
from vigil.telemetry.calls.batch_hook import BatchTelemetry
from vigil.telemetry.calls.interceptor import TelemetryInterceptor
from vigil.telemetry.calls.shadow_hook import ShadowTelemetry
from vigil.telemetry.export.daemon_threads import in_daemon_thread
from vigil.telemetry.export.providers import TelemetryProviders, build_providers
from vigil.telemetry.history.recorder import HistoryRecorder
from vigil.telemetry.metrics.aggregates import SCOPE, Histogram
from vigil.telemetry.metrics.gauges import (
    register_process_gauges,
    register_rollout_gauges,
    register_serving_gauges,
    register_span_export_counters,
)
from vigil.telemetry.metrics.gpu import gpu_reader, register_gpu_gauges
from vigil.telemetry.metrics.instruments import Instruments
from vigil.telemetry.quality.comparison import Comparer
from vigil.telemetry.quality.readings import quality_sections
from vigil.telemetry.stream.frames import Snapshot
from vigil.telemetry.stream.hub import TelemetryHub

logger = logging.getLogger(__name__)


def build_server(
    settings: Settings, services: list[Any], wraps: Sequence[HandlerWrap] = (), *, reuse_port: bool = False
) -> tuple[grpc.aio.Server, WrappingServer, int]:
    """A gRPC server with the given `(add_to_server, servicer)` pairs, their handlers wrapped by `wraps` (first
    innermost), bound to host:port with TLS when configured; returns the server, the wrapping stand-in that
    registers more services, and the real port. `reuse_port`: share the port with the host's other workers
    (SO_REUSEPORT; otherwise a port in use is an error, not a silent split of its calls)."""
    limit = settings.limits.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", int(reuse_port)),
            # Calls gRPC holds until the server takes them; past these, gRPC itself cancels calls (CANCELLED) before
            # any queue bound can refuse them with a reason. The model queues are the bound that speaks.
            ("grpc.server.max_pending_requests", settings.limits.max_pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", settings.limits.max_pending_calls),
            *_connection_age_options(settings.max_connection_age_seconds),
        ]
    )
    registrar = WrappingServer(server, wraps)
    for add, servicer in services:
        add(servicer, registrar)
    address = f"{settings.host}:{settings.grpc_port}"
    credentials = grpc_credentials(settings.security)
    port = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}")
    return server, registrar, port


def _connection_age_options(seconds: float) -> list[tuple[str, int]]:
    if seconds <= 0:
        return []
    milliseconds = round(seconds * 1000)
    return [("grpc.max_connection_age_ms", milliseconds), ("grpc.max_connection_age_grace_ms", milliseconds)]


def member_id() -> str:
    """A name for this process in its fleet: host, process id and a random part (a restarted process is new)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def freeze_startup_objects() -> None:
    """Keep what exists once the server is built (modules, the app, the gRPC server: about 130,000 objects that live
    as long as the process) out of the garbage collector's full collections, which otherwise walk all of them and
    stop the event loop for tens of milliseconds every few seconds under load. Garbage is collected first, so only
    live objects are set aside; models load after this, so an unloaded model's objects can still be collected."""
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class WorkerRole:
    """How an App that is one of a host's worker processes (`vigil serve --workers N`) differs from one alone: its
    gRPC port is shared with the other workers, its HTTP app is served on a Unix socket to the supervisor alone
    (which checks credentials on the host's HTTP port), its health waits for every worker, and its calls carry
    more handler wraps (outermost)."""

    http_socket: str
    peers_ready: Callable[[], bool]
    wraps: Sequence[HandlerWrap] = ()


class App:
    """The whole server: model repository, gRPC services, HTTP endpoint.

    >>> app = App(Settings(grpc_port=0, http_port=0))
    >>> await app.start()          # binds, serves, then loads models
    >>> await app.stop()
    """

    def __init__(self, settings: Settings, *, span_exporters: Sequence[SpanExporter] = (), worker: int = -1,
                 role: WorkerRole | None = None) -> None:
        self.settings = settings
        self.worker = worker
        """Its number among the workers of `vigil serve --workers N`; -1 when it runs alone."""
        self.role = role
        self.repository = ModelRepository(settings.models_dir, load_workers=settings.load_workers)
        self.health = HealthReporter(strict=settings.strict_readiness,
                                     peers_ready=role.peers_ready if role is not None else None)
        self.repository.add_listener(self.health.on_model_change)
        limits = Limits(
            max_rows_per_request=settings.limits.max_rows_per_request,
            max_tensor_elements=settings.limits.max_tensor_elements,
            max_string_bytes=settings.limits.max_string_bytes,
        )
        self.rollouts = Rollouts(self.repository)
        self.repository.add_listener(self.rollouts.on_model_change)
        self.dataplane = DataPlane(self.repository, limits, rollouts=self.rollouts,
                                   max_shadow_in_flight=settings.rollouts.max_shadow_in_flight)
        self.metrics_registry = CollectorRegistry()
        self.telemetry: TelemetryProviders | None = None
        self.telemetry_hub: TelemetryHub | None = None
        self.has_gpu_metrics = False
        self.monitoring: Monitoring | None = None
        self.reports: HistoryRecorder | None = None
        self._interceptor: TelemetryInterceptor | None = None
        self.member_id = member_id()
        """This process's name in the fleet (unique per process start)."""
        self.store: Store | None = None
        """The store (opened when quality or the fleet needs it), shared by everything in this process."""
        self.shared: SharedState | None = None
        """What this process shares with the other members of its fleet through the store."""
        self.fleet: Fleet | None = None
        if settings.telemetry.enabled:
            self._build_telemetry(span_exporters)
        self.gate = _build_gate(settings)
        self.watcher = (RepositoryWatcher(self.repository, interval=settings.repository_poll_seconds)
                        if settings.repository_poll_seconds > 0 else None)
        self._stopping: asyncio.Future[None] | None = None
        self._grpc: grpc.aio.Server | None = None
        self._web: WebServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    def _build_telemetry(self, span_exporters: Sequence[SpanExporter]) -> None:
        config = self.settings.telemetry
        self.telemetry = providers = build_providers(service_version=server_version(),
                                                     service_instance_id=self.member_id, span_exporters=span_exporters)
        self.metrics_registry.register(providers.prometheus)
        instruments = Instruments(providers.meter_provider.get_meter(SCOPE))
        providers.include(instruments.aggregates)
        tracing = providers.call_tracing if config.tracing else None
        interceptor = TelemetryInterceptor(instruments, tracing=tracing, slow_seconds=config.slow_request_seconds)
        self._interceptor = interceptor
        register_serving_gauges(instruments, **self._serving_readings(),
                                in_flight=lambda: [({"method": m}, float(n)) for m, n in interceptor.in_flight.items()])
        register_process_gauges(instruments)
        if (span_process := providers.span_process) is not None:
            register_span_export_counters(instruments, restarts=lambda: span_process.restarts,
                                          dropped=lambda: span_process.dropped)
        self.has_gpu_metrics = register_gpu_gauges(instruments)
        bounds = {h.name: h.bounds for h in instruments.aggregates.members if isinstance(h, Histogram)}

        def read() -> Snapshot:  # the hub, the monitors and the fleet refer to each other; bound below
            return fleet.read()

        self.telemetry_hub = hub = TelemetryHub(read, bounds, max_subscribers=config.max_subscribers,
                                                member=self.member_id)
        if self.settings.quality.enabled or self.settings.fleet.enabled:
            self.store = open_configured_store(self.settings.store)
            self.shared = SharedState(self.store)
        self.monitoring = monitoring = Monitoring(
            self.settings.quality, self.settings.alerts, instruments, self.repository, hub,
            duration_bounds=instruments.request_duration.bounds, store_settings=self.settings.store,
            store=self.store, rolled_back=self.rollouts.rolled_back_readings)
        self.repository.add_listener(monitoring.on_model_change)
        self.reports = build_recorder(self.settings.reports, instruments.aggregates, monitoring.quality,
                                      store=self.shared, member=self.member_id,
                                      purge_interval_seconds=self.settings.store.purge_interval_seconds)
        monitoring.alert_listeners.append(alert_listener(self.reports.history))
        hooks = [BatchTelemetry(instruments, tracing.sampled if tracing and tracing.exporting else None).on_batch]
        if monitoring.quality is not None:
            hooks.append(monitoring.quality.on_batch)

        async def hook_batchers(model: Model) -> None:  # a reloaded version has a new batcher to hook
            for version in model.versions.values():
                if version.batcher is not None:
                    for hook in hooks:
                        version.batcher.add_hook(hook)

        self.repository.add_listener(hook_batchers)
        self.dataplane.add_shadow_hook(ShadowTelemetry(instruments).on_shadow)
        self.rollouts.comparer = comparer = Comparer(instruments.aggregates, monitoring.quality,
                                          history_seconds=DEFAULT_WINDOW_SECONDS)
        self.rollouts.publish = lambda kind, model, version, message: hub.publish(
            kind, model=model, version=version, message=message)
        register_rollout_gauges(instruments, weights=self.rollouts.weight_readings,
                                rolled_back=self.rollouts.rolled_back_readings)
        take_snapshot = snapshot_reader(
            self.repository, self.health, instruments.aggregates,
            # calls being served: a Telemetry subscription is a viewer, not work (`subscribers` counts those)
            in_flight=lambda: sum(n for m, n in interceptor.in_flight.items() if m != "Telemetry"), gpus=gpu_reader(),
            quality=partial(quality_sections, monitoring.quality) if monitoring.quality is not None else None,
            alerts=monitoring.alert_states, rollouts=self.rollouts.telemetry)
        self.repository.add_listener(ModelEvents(hub).on_model_change)
        fleet_settings = self.settings.fleet
        self.fleet = fleet = Fleet(
            self.shared if fleet_settings.enabled else None, self.member_id, tick_seconds=fleet_settings.tick_seconds,
            stale_ticks=fleet_settings.stale_ticks, lease_seconds=fleet_settings.lease_seconds,
            local=take_snapshot, hub=hub, worker=self.worker, quality=monitoring.quality)
        fleet.rollouts = self.rollouts
        self.rollouts.member = self.member_id
        self.rollouts.leading = lambda: fleet.is_leader
        comparer.source = fleet.reading
        monitoring.join_fleet(fleet)

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

    def _outcomes(self) -> Outcomes | None:
        return self.monitoring.outcomes if self.monitoring is not None else None

    async def start(self) -> None:
        """Listen, then load every model; health reports SERVING once loading is over."""
        await self.listen()
        await self.load_models()

    async def listen(self) -> None:
        """Bind and serve gRPC and HTTP; health reports NOT_SERVING until `load_models` finishes."""
        self.repository.scan()
        servicer = InferenceServicer(self.dataplane, max_batch_items=self.settings.limits.max_batch_items,
                                     hub=self.telemetry_hub, outcomes=self._outcomes())
        wraps: list[HandlerWrap] = [self.gate.wrap]
        if self._interceptor is not None:
            wraps.append(self._interceptor.wrap)
        if self.role is not None:
            wraps.extend(self.role.wraps)
        self._grpc, registrar, self.grpc_port = build_server(
            self.settings,
            [
                (add_inference_servicer, servicer),
                (health_pb2_grpc.add_HealthServicer_to_server, self.health.servicer),
                (grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
                 OpenInferenceServicer(self.dataplane, self.health, outcomes=self._outcomes())),
            ],
            wraps,
            reuse_port=self.role is not None,
        )
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(
            [
                inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name,
                grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ]),
            registrar,
        )
        await self.health.set_loading()
        if self.telemetry_hub is not None:
            await self.telemetry_hub.start()
        if self.monitoring is not None:
            await self.monitoring.start()
        if self.fleet is not None:  # joined before models load: their rollouts may be the fleet's already
            await self.fleet.start()
        if self.reports is not None:
            await self.reports.start()
        await self.rollouts.start(self.settings.rollouts.interval_seconds)
        await self._grpc.start()
        security = self.settings.security
        self._web = WebServer(
            build_web_app(self.metrics_registry, is_ready=lambda: self.health.is_serving, hub=self.telemetry_hub,
                          quality=self.monitoring.quality if self.monitoring is not None else None,
                          reports=self.reports,
                          period_quality=outcomes.period_figures if (outcomes := self._outcomes()) else None,
                          access=HttpAccess(self.gate.tokens, frozenset(security.open_http_paths),
                                            mutual_tls=security.client_ca_file is not None)
                          if self.role is None else None),  # a worker's supervisor checks credentials
            self.settings.host,
            self.settings.http_port,
            ssl_context=http_ssl_context(security) if self.role is None else None,
            unix_path=self.role.http_socket if self.role is not None else None,
        )
        await self._web.start()
        self.http_port = self._web.port
        logger.debug("gRPC listening on %s:%d, HTTP on %s:%d", self.settings.host, self.grpc_port,
                    self.settings.host, self.http_port)
        freeze_startup_objects()

    async def load_models(self) -> None:
        await self.repository.load_all()
        await self.health.set_started()
        if self.watcher is not None:
            self.watcher.start()

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING and new calls refused with UNAVAILABLE at once; queued and in-flight calls get `grace`
        seconds to finish; then telemetry is flushed and everything released."""
        if self._stopping is None:  # a second stop waits for the first
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        if self.watcher is not None:  # first, so it starts no load or unload during shutdown
            await self.watcher.stop()
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self.gate.draining = True
        await self.health.set_draining()
        if self.telemetry_hub is not None:  # a last frame with the event, then the streams end
            self.telemetry_hub.publish(TelemetryEvent.SERVER_DRAINING, message="the server is shutting down")
            await self.telemetry_hub.close()
        if self._grpc is not None:
            # New calls get the gate's UNAVAILABLE while admitted ones finish; only then does gRPC stop, which
            # would answer calls still arriving with CANCELLED. Streams get what is left of the grace period.
            # The port stays open for at least `shutdown_refuse_seconds`, so that callers and load balancers hear
            # UNAVAILABLE rather than find calls cut off.
            started = time.monotonic()
            if not await self.gate.drain(grace):
                logger.warning("%d calls were still running after the %.1fs grace period", self.gate.active, grace)
            refuse_until = started + min(self.settings.shutdown_refuse_seconds, grace)
            await asyncio.sleep(max(refuse_until - time.monotonic(), 0.0))
            await self._grpc.stop(max(grace - (time.monotonic() - started), 0.0))
        await self.rollouts.close()
        await self.dataplane.close()
        if self.monitoring is not None:  # after the last batches, so their predictions and alerts count
            await self.monitoring.close()
        if self.fleet is not None:  # the last counts reach the fleet
            await self.fleet.close()
        if self.reports is not None:  # after the last calls and alerts; bounded, so a slow disk cannot hang exit
            await self.reports.close(timeout=REPORT_SAVE_SECONDS)
        if self._web is not None:
            await self._web.stop()
        if self.telemetry is not None:  # flush while the models it reports on are still there
            if not await _flush(self.telemetry):
                logger.warning("telemetry did not flush within %.0fs (is the collector reachable?); going on "
                               "without it", TELEMETRY_FLUSH_SECONDS * 3)
        await self.repository.close()
        if self.store is not None:  # last: everything above may still write to it
            await asyncio.to_thread(self.store.close)
        if self.gate.audit is not None:
            self.gate.audit.close()
        gc.unfreeze()  # a process that goes on (tests, an application embedding the server) can collect it all


def _build_gate(settings: Settings) -> CallGate:
    security, audit = settings.security, settings.audit
    key = audit.identity_hash_key.get_secret_value().encode() if audit.identity_hash_key is not None else None
    return CallGate(
        tokens=token_table(security), mutual_tls=security.client_ca_file is not None,
        open_services=set(security.open_services), admins=set(security.admin_identities),
        audit=AuditLog(audit.file, max_bytes=audit.max_bytes, backup_count=audit.backup_count, identity_key=key)
        if audit.file is not None else None,
    )


TELEMETRY_FLUSH_SECONDS = 3.0
"""On shutdown, how long each telemetry flush may wait for the collector."""


async def _flush(telemetry: TelemetryProviders) -> bool:
    """Flush and shut the exporters down off the loop; False when they did not finish in time (or failed)."""
    try:
        return await in_daemon_thread(lambda: telemetry.shutdown(TELEMETRY_FLUSH_SECONDS),
                                      TELEMETRY_FLUSH_SECONDS * 3, name="vigil-shutdown")
    except Exception:
        logger.exception("flushing telemetry failed")
        return False


SHUTDOWN_MARGIN_SECONDS = 15.0
"""Beyond the grace period, how long flushing and releasing may take before the process exits regardless."""


def _exit_now(reason: str, code: int) -> None:
    """Leave at once, without waiting for calls, threads or exporters (a second signal, or a stuck shutdown)."""
    sys.stderr.write(f"vigil: {reason}\n")
    sys.stderr.flush()
    os._exit(code)


async def serve(settings: Settings, *, announce: bool = True) -> int:
    """Run until SIGINT or SIGTERM, then drain within the grace period and return 0; a second signal exits at once
    (status 128 + signal number)."""
    app = App(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            _exit_now(f"{signal.Signals(signum).name} again: exiting without waiting for calls", 128 + signum)
        logger.info("%s: draining for up to %.1fs (a second signal exits at once)", signal.Signals(signum).name,
                    settings.shutdown_grace_seconds)
        stop.set()
        app.gate.draining = True  # refuse new calls from this moment, before the loop gets to `stop`

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await app.listen()
    if announce:
        announce_line(f"gRPC listening on {settings.host}:{app.grpc_port}")
        announce_line(f"HTTP listening on {settings.host}:{app.http_port}")
    await app.load_models()  # a signal meanwhile is acted on once loading ends (calls are refused already)
    await stop.wait()
    try:
        await asyncio.wait_for(app.stop(), timeout=settings.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS)
    except TimeoutError:
        _exit_now(f"shutdown did not finish within the grace period plus {SHUTDOWN_MARGIN_SECONDS:.0f}s; "
                  "exiting now", 1)
    logger.info("stopped")
    return 0


def announce_line(message: str) -> None:
    """A line that scripts and tests read the ports chosen for port 0 from: written whatever the log level, in the
    log's own format (a JSON line, or text), so the output stays one format."""
    record = logging.LogRecord(logger.name, logging.INFO, __file__, 0, message, None, None)
    handlers = logging.getLogger().handlers
    print(handlers[0].format(record) if handlers else message, flush=True)
