"""The client library against a real server: numpy in and out, deadlines, and client exceptions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from vigil.clients import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    InvalidInput,
    MessageTooLarge,
    ModelNotFound,
    Overloaded,
    Prediction,
    Unavailable,
)
from vigil.clients.errors import Cancelled, ServerError, Unimplemented, error_for, error_from_rpc
from vigil.protos.vigil.v1 import inference_pb2_grpc, telemetry_pb2
from vigil.server.app import App


def rows(n: int = 5) -> np.ndarray:
    return np.random.default_rng(4).normal(size=(n, 30)).astype(np.float32) * 10 + 15


async def test_async_client_predicts_like_onnxruntime(app: App, model_repo: Path) -> None:
    session = ort.InferenceSession(str(model_repo / "breast_cancer" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"features": rows()})[0]
    async with AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        by_array = await client.predict("breast_cancer", rows())
        by_name = await client.predict("breast_cancer", {"features": rows()}, outputs=["probabilities"])
    np.testing.assert_array_equal(by_array["probabilities"], expected)
    np.testing.assert_array_equal(by_name.outputs["probabilities"], expected)
    assert list(by_name.outputs) == ["probabilities"]
    assert by_array.labels == [["malignant", "benign"][i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(by_array.probabilities, expected.max(axis=1), rtol=1e-6)
    assert by_array.server_timing["compute"] > 0


async def test_async_client_errors_and_deadline(app: App) -> None:
    async with AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        with pytest.raises(ModelNotFound, match="'absent'"):
            await client.predict("absent", {"x": np.zeros(1)})
        with pytest.raises(InvalidInput, match="features"):
            await client.predict("breast_cancer", np.zeros((2, 3), np.float32))
        with pytest.raises(Unavailable):
            await client.predict("corrupt", {"x": np.zeros((1, 2), np.float32)})
        with pytest.raises(DeadlineExceeded):
            await client.predict("slow", np.ones((1000, 256), np.float32), timeout=0.005)
        with pytest.raises(ValueError, match="several inputs"):
            await client.predict("add", np.zeros((1, 4), np.float32))
        results = await client.batch_predict([("breast_cancer", rows(2)), ("absent", {"x": np.zeros(1)})])
        assert isinstance(results[0], Prediction) and isinstance(results[1], ModelNotFound)


async def test_sync_client(app: App) -> None:
    def work() -> None:
        with Client(f"127.0.0.1:{app.grpc_port}", timeout=10) as client:
            assert client.health() == "SERVING"
            assert client.health("model/corrupt") == "NOT_SERVING"
            models = {m.name: m for m in client.list_models()}
            assert models["add"].default_version == 2
            assert client.model_metadata("add").version == 2
            result = client.predict("add", {"a": np.ones((2, 4), np.float32), "b": np.ones((2, 4), np.float32)},
                                    version=1)
            assert result.model_version == 1
            np.testing.assert_array_equal(result["sum"], np.full((2, 4), 2.0, np.float32))
            assert result.server_timing["compute"] > 0
            batch = client.batch_predict([("breast_cancer", rows(1)), ("breast_cancer", np.zeros((1, 2)))])
            assert isinstance(batch[0], Prediction) and isinstance(batch[1], InvalidInput)
            with pytest.raises(ModelNotFound):
                client.model_metadata("absent")
            with pytest.raises(DeadlineExceeded):
                client.predict("slow", np.ones((1000, 256), np.float32), timeout=0.005)

    # The server runs on this test's event loop, so the blocking client runs in a worker thread.
    await asyncio.to_thread(work)


def test_unreachable_server_is_unavailable() -> None:
    with Client("127.0.0.1:1", timeout=2) as client, pytest.raises(Unavailable):
        client.list_models()


def test_error_mapping() -> None:
    assert isinstance(error_for(5, "x"), ModelNotFound)
    assert isinstance(error_for(grpc.StatusCode.UNIMPLEMENTED, "x"), Unimplemented)
    assert isinstance(error_for(13, "x"), ServerError) and error_for(13, "x").code == grpc.StatusCode.INTERNAL
    assert isinstance(error_for(999, "x"), ServerError)


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Client(timeout=0)


async def test_a_call_this_client_cancels_stays_cancelled(app: App) -> None:
    """Only a call the server's gRPC ended unheard becomes Unavailable; one cancelled here is still Cancelled."""

    def cancel_a_stream() -> grpc.RpcError:
        with grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            frames = inference_pb2_grpc.InferenceStub(channel).Telemetry(
                telemetry_pb2.TelemetryRequest(interval_ms=100))
            next(frames)
            frames.cancel()
            with pytest.raises(grpc.RpcError) as info:
                next(frames)
        return info.value

    error = await asyncio.wait_for(asyncio.to_thread(cancel_a_stream), 30)
    assert error.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    local = error_from_rpc(error)
    assert isinstance(local, Cancelled) and "Locally cancelled" in str(local)


async def test_a_message_over_a_size_limit_is_a_size_error_not_overload(app: App) -> None:
    rows = np.zeros((200_000, 4), np.float32)  # 3.2 MB a tensor: over this client's limit, then the server's
    async with AsyncClient(f"127.0.0.1:{app.grpc_port}", max_message_bytes=1_000_000) as client:
        with pytest.raises(MessageTooLarge) as sent:
            await client.predict("add", {"a": rows, "b": rows})
    assert "over this client's max_message_bytes of 1,000,000" in str(sent.value)
    async with AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:  # the server's limit is 4 MiB in the tests
        with pytest.raises(MessageTooLarge) as received:
            await client.predict("add", {"a": rows, "b": rows})
    assert "over the server's limit" in str(received.value)
    assert not isinstance(sent.value, Overloaded) and not isinstance(received.value, Overloaded)
