"""Health reflects readiness (overall and per model), reflection lists the services, the HTTP port answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests import onnx_models
from tests.conftest import make_settings, running_app
from vigil.protos.vigil.v1 import inference_pb2, inference_pb2_grpc
from vigil.server.app import App

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def check(channel: grpc.aio.Channel, service: str) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return response.status


async def test_health_overall_and_per_model(channel: grpc.aio.Channel) -> None:
    assert await check(channel, "") == SERVING
    assert await check(channel, "vigil.v1.Inference") == SERVING
    assert await check(channel, "model/breast_cancer") == SERVING
    assert await check(channel, "model/add/1") == SERVING
    assert await check(channel, "model/corrupt") == NOT_SERVING
    assert await check(channel, "model/corrupt/1") == NOT_SERVING


async def test_unknown_health_service_is_not_found(channel: grpc.aio.Channel) -> None:
    try:
        await check(channel, "model/absent")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    else:
        raise AssertionError("expected NOT_FOUND")


async def test_strict_readiness_reports_not_serving_while_a_model_failed(model_repo: Path) -> None:
    async with running_app(model_repo, strict_readiness=True) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        assert await check(channel, "") == NOT_SERVING
        assert await check(channel, "model/breast_cancer") == SERVING


async def test_not_serving_until_models_are_loaded_and_after_shutdown_begins(tmp_path: Path) -> None:
    onnx_models.add_model(tmp_path / "add" / "1" / "model.onnx")
    app = App(make_settings(tmp_path))
    await app.listen()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            assert await check(channel, "") == NOT_SERVING
            await app.load_models()
            assert await check(channel, "") == SERVING
            await app.health.set_draining()
            assert await check(channel, "") == NOT_SERVING
    finally:
        await app.stop(grace=0)


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        yield reflection_pb2.ServerReflectionRequest(file_containing_symbol="vigil.v1.Inference")

    responses = [r async for r in stub.ServerReflectionInfo(requests())]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"vigil.v1.Inference", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert responses[1].file_descriptor_response.file_descriptor_proto  # descriptors for grpcurl


async def test_http_port_serves_probes_and_metrics(app: App) -> None:
    base = f"http://127.0.0.1:{app.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{base}/readyz") as response:
            assert response.status == 200
        async with session.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert "process_cpu_time_seconds_total" in await response.text()


async def next_status(stream: object) -> int:
    response = await asyncio.wait_for(stream.read(), timeout=10)  # type: ignore[attr-defined]
    assert response is not grpc.aio.EOF, "the Watch stream ended"
    return int(response.status)


async def test_watch_streams_status_changes_overall_and_per_model(model_repo: Path) -> None:
    async with running_app(model_repo) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = health.Watch(health_pb2.HealthCheckRequest(service=""))
        model = health.Watch(health_pb2.HealthCheckRequest(service="model/add"))
        unknown = health.Watch(health_pb2.HealthCheckRequest(service="model/absent"))
        assert await next_status(overall) == SERVING
        assert await next_status(model) == SERVING
        # the standard answer for a service the server does not know yet: SERVICE_UNKNOWN, and the stream stays
        assert await next_status(unknown) == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        await app.repository.unload_model("add")
        assert await next_status(model) == NOT_SERVING
        await app.repository.load_model("add")
        assert await next_status(model) == SERVING
        await app.health.set_draining()
        assert await next_status(overall) == NOT_SERVING
        for stream in (overall, model, unknown):
            stream.cancel()


async def test_a_client_with_grpc_health_checking_makes_calls(model_repo: Path) -> None:
    """gRPC's client-side health checking (`healthCheckConfig`) watches the server's health service and sends
    calls only to a SERVING backend; the calls go through."""
    config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                         "healthCheckConfig": {"serviceName": "vigil.v1.Inference"}})
    async with running_app(model_repo) as app, grpc.aio.insecure_channel(
            f"127.0.0.1:{app.grpc_port}", options=[("grpc.service_config", config)]) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        for _ in range(3):
            listed = await stub.ListModels(inference_pb2.ListModelsRequest(), timeout=10)
            assert {m.name for m in listed.models} >= {"add", "breast_cancer"}
        await app.health.set_draining()
        # NOT_SERVING reaches the channel through its Watch; then it has no healthy backend and fails calls itself
        # (UNAVAILABLE) instead of sending them to the draining server, which would say it is shutting down
        failure = None
        for _ in range(100):
            try:
                await stub.ListModels(inference_pb2.ListModelsRequest(), timeout=5)
            except grpc.aio.AioRpcError as exc:
                failure = exc
                break
            await asyncio.sleep(0.05)
        assert failure is not None, "calls still went through 5 s after the server reported NOT_SERVING"
        assert failure.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" not in (failure.details() or ""), failure.details()
