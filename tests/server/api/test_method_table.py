"""Registered methods are served from one table of wrapped handlers looked up by full method name, not through
`grpc.aio`'s registered-method path; a method no service has is still UNIMPLEMENTED."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.conftest import running_app
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.api.handler_wrapping import WrappingServer


class Recorder:
    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.registered.append(service)


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def test_registered_methods_land_in_the_first_generic_handler_wrapped() -> None:
    server = Recorder()
    wrapped: list[str] = []

    def wrap(full_method: str, handler: Any) -> Any:
        wrapped.append(full_method)
        return ("wrapped", handler)

    registrar = WrappingServer(server, [wrap])
    inference_pb2_grpc.add_InferenceServicer_to_server(inference_pb2_grpc.InferenceServicer(), registrar)
    assert server.registered == []  # nothing goes through grpc.aio's registered-method path
    table = server.generic[0]  # the table answers before the per-service handler the generated code also adds
    found = table.service(Details("/vigil.v1.Inference/Predict"))
    assert found[0] == "wrapped" and found[1].unary_unary is not None
    assert table.service(Details("/vigil.v1.Inference/NoSuchMethod")) is None
    assert table.service(Details("/other.Service/Predict")) is None
    assert "/vigil.v1.Inference/Predict" in wrapped and len(server.generic) == 2


async def test_an_unknown_method_is_unimplemented_and_a_known_one_answers(model_repo: Path) -> None:
    async with running_app(model_repo) as app:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            unknown = channel.unary_unary("/vigil.v1.Inference/NoSuchMethod")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await unknown(b"")
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
            listing = channel.unary_unary("/vigil.v1.Inference/ListModels")
            assert isinstance(await listing(b""), bytes)
