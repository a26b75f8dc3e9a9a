"""TLS, mutual TLS and bearer tokens: the right clients get in, the wrong ones are refused with the right codes, on
both APIs, the Telemetry stream, reflection and the HTTP port; the client library and the CLI speak all three.
Bytes that are not a request message get INVALID_ARGUMENT, not UNKNOWN."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.certs import Authority, Pem
from tests.conftest import running_app
from vigil.clients import TLS, AsyncClient, Client, PermissionDenied, Rollout, Unauthenticated, Unavailable
from vigil.protos.inference import grpc_service_pb2 as oip
from vigil.protos.inference import grpc_service_pb2_grpc
from vigil.protos.tensors import from_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc, telemetry_pb2
from vigil.server.security.credentials import TokenTable, bearer_token, read_tokens_file, token_table
from vigil.server.settings import SecuritySettings

ALICE = "alice-token-0123456789abcdef"
OPS = "ops-token-fedcba9876543210"
MODEL = "identity_int32"
ROWS = np.arange(4, dtype=np.int32).reshape(2, 2)


class Certs:
    def __init__(self, folder: Path) -> None:
        self.ca = Authority(folder, "vigil-test-ca")
        self.rogue = Authority(folder, "rogue-ca")
        self.server = self.ca.issue("vigil-server", server=True)
        self.alice = self.ca.issue("alice", server=False)
        self.mallory = self.rogue.issue("mallory", server=False)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def add_request() -> pb.PredictRequest:
    return pb.PredictRequest(model_name=MODEL, inputs=[from_array("x", ROWS)])


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


# --- tokens ---------------------------------------------------------------------------------------------------------

def test_token_table_matches_exactly_and_refuses_weak_or_shared_tokens(tmp_path: Path) -> None:
    table = TokenTable({"alice": ALICE, "ops": OPS})
    assert table.identify(ALICE) == "alice" and table.identify(OPS) == "ops"
    assert table.identify(ALICE[:-1]) is None and table.identify(ALICE + "x") is None and table.identify("") is None
    with pytest.raises(ValueError, match="at least 16"):
        TokenTable({"short": "abc"})
    with pytest.raises(ValueError, match="same token"):
        TokenTable({"a": ALICE, "b": ALICE})
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer") is None
    path = tmp_path / "tokens"
    path.write_text(f"# who: token\nalice: {ALICE}\n\nops:{OPS}\n")
    assert read_tokens_file(path) == {"alice": ALICE, "ops": OPS}
    path.write_text("alice\n")
    with pytest.raises(ValueError, match=":1: expected `identity: token`"):
        read_tokens_file(path)
    path.write_text(f"alice: {ALICE}\n")
    with pytest.raises(ValueError, match="both in tokens_file and in tokens"):
        token_table(SecuritySettings(tokens_file=path, tokens={"alice": OPS}))  # type: ignore[dict-item]


@pytest.fixture
async def token_app(model_repo: Path):  # type: ignore[no-untyped-def]
    security = SecuritySettings(tokens={"alice": ALICE, "ops": OPS})  # type: ignore[dict-item]
    async with running_app(model_repo, security=security) as app:
        yield app


async def test_tokens_gate_both_apis_and_leave_health_open(token_app) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{token_app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        try:
            await stub.Predict(add_request())
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in (exc.details() or "")
        else:
            raise AssertionError("a call without a token was served")
        assert await code_of(stub.Predict(add_request(), metadata=bearer("wrong-token-0123456789"))) \
            is grpc.StatusCode.UNAUTHENTICATED
        assert await code_of(stub.Predict(add_request(), metadata=(("authorization", f"Basic {ALICE}"),))) \
            is grpc.StatusCode.UNAUTHENTICATED
        response = await stub.Predict(add_request(), metadata=bearer(ALICE))
        assert response.model_name == MODEL
        assert await code_of(stub.ListModels(pb.ListModelsRequest())) is grpc.StatusCode.UNAUTHENTICATED

        oip_stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        infer = oip.ModelInferRequest(model_name=MODEL, inputs=[oip.ModelInferRequest.InferInputTensor(
            name="x", datatype="INT32", shape=[2, 2], contents=oip.InferTensorContents(int_contents=ROWS.ravel()))])
        assert await code_of(oip_stub.ModelInfer(infer)) is grpc.StatusCode.UNAUTHENTICATED
        assert (await oip_stub.ModelInfer(infer, metadata=bearer(OPS))).model_name == MODEL

        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        call = reflection.ServerReflectionInfo(iter([listing]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in call:
                pass
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        answers = [a async for a in reflection.ServerReflectionInfo(iter([listing]), metadata=bearer(ALICE))]
        assert "vigil.v1.Inference" in {s.name for s in answers[0].list_services_response.service}

        telemetry = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await telemetry.read()
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        frames = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100), metadata=bearer(ALICE))
        assert (await frames.read()).sequence >= 1
        frames.cancel()


async def test_reflection_can_be_left_open(model_repo: Path) -> None:
    security = SecuritySettings(tokens={"alice": ALICE},  # type: ignore[dict-item]
                                open_services=["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"])
    async with running_app(model_repo, security=security) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        answers = [a async for a in reflection.ServerReflectionInfo(iter([listing]))]
        assert "vigil.v1.Inference" in {s.name for s in answers[0].list_services_response.service}
        stub = inference_pb2_grpc.InferenceStub(channel)
        assert await code_of(stub.Predict(add_request())) is grpc.StatusCode.UNAUTHENTICATED


async def test_client_library_sends_the_token(token_app) -> None:  # type: ignore[no-untyped-def]
    target = f"127.0.0.1:{token_app.grpc_port}"
    async with AsyncClient(target, timeout=10, token=ALICE) as client:
        result = await client.predict(MODEL, ROWS)
        np.testing.assert_allclose(result.outputs["y"], ROWS)
        frames = client.telemetry(interval_ms=100)
        assert (await frames.__anext__()).sequence >= 1
        await frames.aclose()
    async with AsyncClient(target, timeout=10) as client:
        with pytest.raises(Unauthenticated, match="credentials"):
            await client.predict(MODEL, ROWS)
    with Client(target, timeout=10, token=OPS) as sync_client:  # a blocking client off the event loop
        result = await asyncio.to_thread(sync_client.predict, MODEL, ROWS)
        assert result.model_name == MODEL
        frames = sync_client.telemetry(interval_ms=100)
        assert (await asyncio.to_thread(next, frames)).sequence >= 1
        frames.close()  # type: ignore[attr-defined]
    with Client(target, timeout=10, token="not-the-right-token-0000") as sync_client:
        with pytest.raises(Unauthenticated, match="not valid"):
            await asyncio.to_thread(sync_client.predict, MODEL, ROWS)


def http_get(url: str, *, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
             ) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read(200)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_http_port_needs_the_token_except_probes_metrics_and_the_page(token_app) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{token_app.http_port}"
    for open_path in ("/healthz", "/readyz", "/metrics", "/"):
        assert (await asyncio.to_thread(http_get, base + open_path))[0] == 200, open_path
    status, body = await asyncio.to_thread(http_get, base + "/report.json")
    assert status == 401 and b"Bearer" in body
    assert (await asyncio.to_thread(http_get, base + "/report.json",
                                    headers={"Authorization": "Bearer wrong-token-0123456789"}))[0] == 401
    assert (await asyncio.to_thread(http_get, base + "/report.json",
                                    headers={"Authorization": f"Bearer {ALICE}"}))[0] == 200
    status, _ = await asyncio.to_thread(http_get, base + "/telemetry/stream?interval_ms=100")
    assert status == 401
    # the browser's EventSource cannot set headers: the page passes the token as a query parameter
    reader, writer = await asyncio.open_connection("127.0.0.1", token_app.http_port)
    writer.write(f"GET /telemetry/stream?interval_ms=100&access_token={OPS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    writer.close()


# --- TLS and mutual TLS ---------------------------------------------------------------------------------------------

def tls_settings(certs: Certs, *, mutual: bool, tokens: dict[str, str] | None = None) -> SecuritySettings:
    return SecuritySettings(tls_cert_file=certs.server.cert, tls_key_file=certs.server.key,
                            client_ca_file=certs.ca.pem.cert if mutual else None,
                            tokens=tokens or {})  # type: ignore[arg-type]


def client_tls(certs: Certs, cert: Pem | None = None, ca: Path | None = None) -> TLS:
    return TLS(ca_file=ca or certs.ca.pem.cert, cert_file=cert.cert if cert else None,
               key_file=cert.key if cert else None)


async def test_tls_serves_clients_that_trust_its_ca_only(model_repo: Path, certs: Certs) -> None:
    async with running_app(model_repo, security=tls_settings(certs, mutual=False)) as app:
        target = f"127.0.0.1:{app.grpc_port}"
        async with AsyncClient(target, timeout=10, tls=client_tls(certs)) as client:
            assert (await client.predict(MODEL, ROWS)).model_name == MODEL
            assert await client.health() == "SERVING"
        async with AsyncClient(target, timeout=5, tls=client_tls(certs, ca=certs.rogue.pem.cert)) as client:
            with pytest.raises(Unavailable):  # the server's certificate is not signed by the CA this client trusts
                await client.predict(MODEL, ROWS)
        async with AsyncClient(target, timeout=5) as client:
            with pytest.raises(Unavailable):  # plaintext to a TLS port
                await client.predict(MODEL, ROWS)
        context = ssl.create_default_context(cafile=certs.ca.pem.cert)
        assert (await asyncio.to_thread(http_get, f"https://127.0.0.1:{app.http_port}/healthz", context=context)
                )[0] == 200
        assert (await asyncio.to_thread(http_get, f"https://127.0.0.1:{app.http_port}/report.json",
                                        context=context))[0] == 200  # TLS alone asks for no credentials


async def test_mutual_tls_admits_certificates_of_the_client_ca_only(model_repo: Path, certs: Certs,
                                                                    tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    async with running_app(model_repo, security=tls_settings(certs, mutual=True),
                           audit={"file": audit, "identity_hash_key": "k" * 32}) as app:
        target = f"127.0.0.1:{app.grpc_port}"
        async with AsyncClient(target, timeout=10, tls=client_tls(certs, certs.alice)) as client:
            assert (await client.predict(MODEL, ROWS)).model_name == MODEL
        # Without a certificate, or with one another CA signed, the TLS handshake fails: no call is made, so the
        # client sees UNAVAILABLE (there is no gRPC status to send before the handshake).
        for tls in (client_tls(certs), client_tls(certs, certs.mallory)):
            async with AsyncClient(target, timeout=5, tls=tls) as client:
                with pytest.raises(Unavailable):
                    await client.predict(MODEL, ROWS)
        context = ssl.create_default_context(cafile=certs.ca.pem.cert)
        base = f"https://127.0.0.1:{app.http_port}"
        assert (await asyncio.to_thread(http_get, base + "/healthz", context=context))[0] == 200
        assert (await asyncio.to_thread(http_get, base + "/report.json", context=context))[0] == 401
        context.load_cert_chain(certs.alice.cert, certs.alice.key)
        assert (await asyncio.to_thread(http_get, base + "/report.json", context=context))[0] == 200
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [line["status"] for line in lines] == ["OK"]
    from vigil.telemetry.quality.outcomes import subject_hash
    assert lines[0]["identity"] == subject_hash(b"k" * 32, "cert:alice")


async def test_mutual_tls_with_tokens_accepts_either(model_repo: Path, certs: Certs) -> None:
    async with running_app(model_repo, security=tls_settings(certs, mutual=True, tokens={"ops": OPS})) as app:
        target = f"127.0.0.1:{app.grpc_port}"
        async with AsyncClient(target, timeout=10, tls=client_tls(certs, certs.alice), token=OPS) as client:
            assert (await client.predict(MODEL, ROWS)).model_name == MODEL
        async with AsyncClient(target, timeout=10, tls=client_tls(certs, certs.alice),
                               token="wrong-token-0123456789") as client:
            with pytest.raises(Unauthenticated):  # a token that is sent must be right, certificate or not
                await client.predict(MODEL, ROWS)


VIGIL = str(Path(sys.executable).parent / "vigil")


async def test_cli_speaks_tls_and_tokens(model_repo: Path, certs: Certs) -> None:
    async with running_app(model_repo, security=tls_settings(certs, mutual=True, tokens={"ops": OPS})) as app:
        async def vigil(*args: str) -> tuple[int, str]:
            process = await asyncio.create_subprocess_exec(
                VIGIL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(process.communicate(), 60)
            return process.returncode or 0, out.decode()

        target = ["--target", f"127.0.0.1:{app.grpc_port}", "--timeout", "5"]
        code, out = await vigil("--ca-file", str(certs.ca.pem.cert), "--cert-file", str(certs.alice.cert),
                                "--key-file", str(certs.alice.key), "models", *target)
        assert code == 0 and MODEL in out, out
        code, out = await vigil("--ca-file", str(certs.ca.pem.cert), "--cert-file", str(certs.alice.cert),
                                "--key-file", str(certs.alice.key), "--token", "wrong-token-0123456789",
                                "models", *target)
        assert code != 0 and "UNAUTHENTICATED" in out, out
        code, out = await vigil("--ca-file", str(certs.ca.pem.cert), "models", *target)
        assert code != 0 and "UNAVAILABLE" in out, out
        code, out = await vigil("--cert-file", str(certs.alice.cert), "models", *target)
        assert code != 0 and "--key-file" in out, out


async def test_only_admin_identities_load_and_unload_models_and_set_rollouts(model_repo: Path) -> None:
    security = SecuritySettings(tokens={"alice": ALICE, "ops": OPS},  # type: ignore[dict-item]
                                admin_identities=["ops"])
    async with running_app(model_repo, security=security) as app:
        target = f"127.0.0.1:{app.grpc_port}"
        async with AsyncClient(target, timeout=30, token=ALICE) as alice:
            with pytest.raises(PermissionDenied, match="admin_identities"):
                await alice.unload_model(MODEL)
            with pytest.raises(PermissionDenied, match="admin_identities"):
                await alice.set_rollout(MODEL, Rollout(weights={1: 100}))
            assert (await alice.get_rollout(MODEL)).phase == "none"  # reading is not an admin method
            assert (await alice.predict(MODEL, ROWS)).model_name == MODEL  # still served
        async with AsyncClient(target, timeout=30, token=OPS) as ops:
            assert (await ops.set_rollout(MODEL, Rollout(weights={1: 100}))).phase == "split"
            summary = await ops.unload_model(MODEL)
            assert {v.state for v in summary.versions} == {"UNLOADED"}
            summary = await ops.load_model(MODEL)
            assert summary.default_version == 1


async def test_requests_that_do_not_parse_get_invalid_argument(app) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        for method in ("/vigil.v1.Inference/Predict", "/inference.GRPCInferenceService/ModelInfer",
                       "/grpc.health.v1.Health/Check"):
            call = channel.unary_unary(method)(b"\x0a\x01\xff\x00")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, method
            assert "not a valid message" in str(refused.value.details())
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")(iter([b"\xff\xff"]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stream:
                pass
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        health = health_pb2_grpc.HealthStub(channel)  # and the server goes on
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
