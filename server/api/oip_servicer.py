"""The Open Inference Protocol (KServe v2) service, on the same port and DataPlane as the native API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.inference import grpc_service_pb2_grpc
from vigil.server.api import oip_convert
from vigil.server.api.health import HealthReporter
from vigil.server.api.native_servicer import Context, deadline_of
from vigil.server.errors import ModelNotFound, ModelNotReady, NotSupported, maps_errors, status_for
from vigil.server.inference.dataplane import DataPlane, new_request_id
from vigil.server.inference.outcomes import Outcomes
from vigil.server.rollouts.routing import Metadata

logger = logging.getLogger(__name__)

EXTENSIONS = ["model_repository", "statistics"]
"""Protocol extensions served: the repository index, load and unload, and model statistics."""

UNSUPPORTED_LOAD_PARAMETERS = ("config", "file:")
"""RepositoryModelLoad parameters (by name or prefix) that send a config or files with the call: Vigil loads from
the repository folder only."""

MAX_ECHOED = 256
"""Characters of a failed stream request's model name and id repeated in its error answer."""
STREAM_CONCURRENCY = 64
"""Requests of one ModelStreamInfer stream in flight at once; reading the stream waits beyond that."""


def server_version() -> str:
    try:
        return package_version("vigil")
    except PackageNotFoundError:
        return "0"


class OpenInferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService`: the same validation, statuses and batching as `vigil.v1.Inference`."""

    def __init__(self, dataplane: DataPlane, health: HealthReporter, *, outcomes: Outcomes | None = None) -> None:
        self._dataplane = dataplane
        self._health = health
        self._outcomes = outcomes
        self._version = server_version()

    async def ServerLive(self, request: oip.ServerLiveRequest, context: Context) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request: oip.ServerReadyRequest, context: Context) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=self._health.is_serving)

    @maps_errors
    async def ModelReady(self, request: oip.ModelReadyRequest, context: Context) -> oip.ModelReadyResponse:
        try:
            self._dataplane.repository.resolve(request.name, oip_convert.version_number(request.version))
        except (ModelNotFound, ModelNotReady):
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: Context
    ) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name="vigil", version=self._version, extensions=EXTENSIONS)

    @maps_errors
    async def ModelMetadata(self, request: oip.ModelMetadataRequest, context: Context) -> oip.ModelMetadataResponse:
        model = self._dataplane.repository.get(request.name)
        version = model.resolve(oip_convert.version_number(request.version))
        return oip_convert.to_model_metadata(model, version)

    @maps_errors
    async def ModelInfer(self, request: oip.ModelInferRequest, context: Context) -> oip.ModelInferResponse:
        return await self._infer(request, deadline_of(context), context.invocation_metadata)

    async def _infer(self, request: oip.ModelInferRequest, deadline: float | None,
                     metadata: Metadata | None = None) -> oip.ModelInferResponse:
        client_id = oip_convert.client_id(request.id)
        subject = oip_convert.subject_id(request)
        result = await self._dataplane.infer(oip_convert.to_request(request), deadline=deadline,
                                             request_id=new_request_id(), metadata=metadata)
        if (client_id or subject) and self._outcomes is not None:
            self._outcomes.remember(result.request_id, result.model_name, str(result.model_version),
                                    client_id=client_id, subject_id=subject)
        return oip_convert.to_response(result, client_id)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[oip.ModelInferRequest], context: Context
    ) -> AsyncIterator[oip.ModelStreamInferResponse]:
        """One response per request, in completion order (match them by `id`); errors travel in the stream."""
        answers: asyncio.Queue[oip.ModelStreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_CONCURRENCY)
        tasks: set[asyncio.Task[None]] = set()

        async def answer(request: oip.ModelInferRequest) -> None:
            try:
                response = await self._infer(request, deadline_of(context), context.invocation_metadata)
                await answers.put(oip.ModelStreamInferResponse(infer_response=response))
            except Exception as exc:
                code, message = status_for(exc)
                await answers.put(oip.ModelStreamInferResponse(
                    error_message=f"{code.name}: {message}",
                    infer_response=oip.ModelInferResponse(model_name=request.model_name[:MAX_ECHOED],
                                                          id=request.id[:MAX_ECHOED]),
                ))
            finally:
                slots.release()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()

    @maps_errors
    async def RepositoryIndex(
        self, request: oip.RepositoryIndexRequest, context: Context
    ) -> oip.RepositoryIndexResponse:
        return oip_convert.to_repository_index(self._dataplane.repository.models, ready_only=request.ready)

    @maps_errors
    async def RepositoryModelLoad(
        self, request: oip.RepositoryModelLoadRequest, context: Context
    ) -> oip.RepositoryModelLoadResponse:
        sent = sorted(p for p in request.parameters if p.startswith(UNSUPPORTED_LOAD_PARAMETERS))
        if sent:
            raise NotSupported(f"RepositoryModelLoad parameters {', '.join(sent)} are not supported: Vigil loads "
                               "models from their folder in the repository only")
        await self._dataplane.repository.load_model(request.model_name)
        return oip.RepositoryModelLoadResponse()

    @maps_errors
    async def RepositoryModelUnload(
        self, request: oip.RepositoryModelUnloadRequest, context: Context
    ) -> oip.RepositoryModelUnloadResponse:
        await self._dataplane.repository.unload_model(request.model_name)
        return oip.RepositoryModelUnloadResponse()

    @maps_errors
    async def ModelStatistics(
        self, request: oip.ModelStatisticsRequest, context: Context
    ) -> oip.ModelStatisticsResponse:
        repository = self._dataplane.repository
        models = [repository.get(request.name)] if request.name else repository.models
        wanted = oip_convert.version_number(request.version)
        response = oip.ModelStatisticsResponse()
        for model in models:
            versions = [model.find(wanted)] if wanted else sorted(model.versions.values(), key=lambda v: v.version)
            response.model_stats.extend(oip_convert.to_model_statistics(v) for v in versions)
        return response


