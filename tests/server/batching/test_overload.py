"""A burst of 10,000 Predict calls against a small queue bound: the excess is refused, nothing is lost or mixed up."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import onnx_models
from tests.conftest import running_app
from vigil.protos.tensors import from_array, to_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc

Code = grpc.StatusCode

BURST = 10_000
QUEUE_SIZE = 64
OFFSET = 100.0
CHANNELS = 4


@pytest.fixture
def burst_repo(tmp_path: Path) -> Path:
    """One model, sum = a + b + 100, behind a queue bound of 64.

    The model runs in microseconds, faster than the event loop admits calls, so on its own its queue would never
    fill. Batches larger than the queue bound and a 100 ms queue delay hold each batch back until the delay ends:
    the queue sits full for most of the burst on any machine, about 640 requests a second get in, the rest are
    refused.
    """
    onnx_models.add_model(tmp_path / "bounded" / "1" / "model.onnx", offset=OFFSET)
    (tmp_path / "bounded" / "config.toml").write_text(
        f"max_batch_size = {2 * QUEUE_SIZE}\nmax_queue_size = {QUEUE_SIZE}\nmax_queue_delay_ms = 100\n"
        'execution_providers = ["cpu"]\n[warmup]\nruns = 0\n'
    )
    return tmp_path


def request(value: int) -> pb.PredictRequest:
    """One row whose four values are `value`, so the answer (value + 100) names the request it belongs to."""
    a = np.full((1, 4), value, np.float32)  # exact in float32 below 2**24
    return pb.PredictRequest(model_name="bounded", inputs=[from_array("a", a), from_array("b", np.zeros_like(a))],
                             output_names=["sum"])


async def requests_by_code(http_port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{http_port}/metrics") as r:
        page = await r.text()
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(page) if family.name == "vigil_requests"
        for sample in family.samples
        if sample.name == "vigil_requests_total" and sample.labels.get("method") == "Predict"
    }


async def test_burst_over_queue_bound(burst_repo: Path) -> None:
    async with running_app(burst_repo) as app:
        target = f"127.0.0.1:{app.grpc_port}"
        # A local subchannel pool each: separate connections, as separate clients would have.
        channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(CHANNELS)]
        stubs = [inference_pb2_grpc.InferenceStub(ch) for ch in channels]
        try:
            await asyncio.gather(*(ch.channel_ready() for ch in channels))
            calls = [stubs[i % CHANNELS].Predict(request(i), timeout=120) for i in range(BURST)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)

            assert len(outcomes) == BURST
            ok = {i: o for i, o in enumerate(outcomes) if isinstance(o, pb.PredictResponse)}
            refused = {i: o for i, o in enumerate(outcomes) if isinstance(o, grpc.aio.AioRpcError)}
            assert len(ok) + len(refused) == BURST, [o for o in outcomes if not isinstance(o, pb.PredictResponse
                                                                                          | grpc.aio.AioRpcError)]
            codes = Counter(e.code().name for e in refused.values())
            # CANCELLED here, from no handler of ours, is gRPC core's own backlog limit on calls the server has not
            # yet picked up (grpc.server.max_pending_requests, 1000 by default, hard limit 3000): it drops calls
            # at random, before the queue bound can refuse them with a reason.
            assert set(codes) <= {"RESOURCE_EXHAUSTED"}, f"{len(ok)} OK, refused: {dict(codes)}"
            assert all(f"max_queue_size={QUEUE_SIZE}" in (e.details() or "") for e in refused.values())
            assert ok and refused, f"{len(ok)} admitted, {len(refused)} refused: the burst should give some of each"
            print(f"\noverload: {BURST} calls, {len(ok)} admitted and answered, {len(refused)} RESOURCE_EXHAUSTED")

            for i, response in ok.items():  # each admitted call got its own row back, not a neighbour's
                assert response.model_name == "bounded" and response.model_version == 1
                [output] = response.outputs
                assert output.name == "sum"
                np.testing.assert_array_equal(to_array(output), np.full((1, 4), i + OFFSET, np.float32))
            ids = [r.request_id for r in ok.values()]
            assert len(set(ids)) == len(ids) and all(len(rid) == 32 for rid in ids)

            # The server counted the same split: per-version statistics, rows run, and /metrics by status code.
            version = app.repository.get("bounded").find(1)
            assert version.requests.success.count == len(ok)
            assert version.requests.fail.count == len(refused)
            assert version.batcher is not None
            assert version.batcher.statistics.inferences == len(ok) and version.batcher.statistics.failures == 0
            assert version.batcher.queue_depth == 0 and version.batcher.in_flight == 0
            by_code = await requests_by_code(app.http_port)
            assert by_code.get("OK") == len(ok)
            assert by_code.get("RESOURCE_EXHAUSTED") == len(refused)
            assert set(by_code) <= {"OK", "RESOURCE_EXHAUSTED"}, by_code

            # Once the burst is over the server serves normally again.
            after = await stubs[0].Predict(request(BURST), timeout=10)
            np.testing.assert_array_equal(to_array(after.outputs[0]), np.full((1, 4), BURST + OFFSET, np.float32))
        finally:
            for ch in channels:
                await ch.close()
