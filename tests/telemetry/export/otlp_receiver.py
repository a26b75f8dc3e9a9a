"""Real OTLP receivers for tests: the collector's TraceService and MetricsService over gRPC, and its OTLP/HTTP
endpoints, storing what arrives."""

from __future__ import annotations

from typing import Any

import grpc
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """Start with `await receiver.start()`; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT should say."""

    def __init__(self) -> None:
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def Export(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.trace_requests.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()
        self.metric_requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    async def start(self) -> None:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[Any]:
        return [span for request in self.trace_requests for resource in request.resource_spans
                for scope in resource.scope_spans for span in scope.spans]

    def resources(self) -> list[dict[str, str]]:
        return [{a.key: a.value.string_value for a in r.resource.attributes}
                for request in self.trace_requests for r in request.resource_spans]

    def metrics(self) -> dict[str, Any]:
        """The latest export of each metric by name."""
        latest: dict[str, Any] = {}
        for request in self.metric_requests:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        latest[metric.name] = metric
        return latest


class OtlpHttpReceiver(OtlpReceiver):
    """The collector's OTLP/HTTP receiver (protobuf bodies on /v1/traces and /v1/metrics), storing what arrives."""

    def __init__(self) -> None:
        super().__init__()
        self._runner: web.AppRunner | None = None

    async def _traces(self, request: web.Request) -> web.Response:
        self.trace_requests.append(trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read()))
        return web.Response(body=trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metric_requests.append(metrics_service_pb2.ExportMetricsServiceRequest.FromString(await request.read()))
        return web.Response(body=metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
