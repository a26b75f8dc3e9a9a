"""Dynamic batching: shared runs with identical results, shape separation, queue bound, deadlines, cancellation,
failure isolation and timing trailers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from tests import onnx_models
from tests.conftest import running_app
from vigil.protos.tensors import from_array, to_array
from vigil.protos.timing import SERVER_TIMING_KEY, parse_timing
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc
from vigil.server.app import App
from vigil.server.batching.batcher import DynamicBatcher
from vigil.server.batching.records import Arrays, BatchRecord, BatchResult
from vigil.server.errors import DeadlineExpired, InferenceFailed, Overloaded
from vigil.server.models.config import ModelConfig
from vigil.server.models.sessions import ModelSession

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def batch_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batch_models")
    onnx_models.add_model(root / "add" / "1" / "model.onnx", offset=0.5)
    onnx_models.sequence_model(root / "sequence" / "1" / "model.onnx")
    onnx_models.slow_model(root / "slow" / "1" / "model.onnx")
    onnx_models.gather_model(root / "gather" / "1" / "model.onnx")
    onnx_models.gather_model(root / "gather_held" / "1" / "model.onnx")
    onnx_models.chain_model(root / "chain" / "1" / "model.onnx")
    (root / "chain" / "config.toml").write_text("max_batch_size = 64\n")
    (root / "add" / "config.toml").write_text("max_batch_size = 16\n")
    (root / "sequence" / "config.toml").write_text("max_batch_size = 64\n")
    (root / "slow" / "config.toml").write_text("max_batch_size = 1000\nmax_queue_size = 4\n[warmup]\nruns = 0\n")
    (root / "gather" / "config.toml").write_text("max_batch_size = 64\n[warmup]\nruns = 0\n")
    # Waits until 40 rows are queued (or half a second): 40 concurrent calls share one run.
    (root / "gather_held" / "config.toml").write_text(
        "max_batch_size = 40\nmax_queue_delay_ms = 500\n[warmup]\nruns = 0\n")
    return root


@pytest.fixture
async def served(batch_repo: Path) -> AsyncIterator[tuple[App, inference_pb2_grpc.InferenceStub]]:
    async with running_app(batch_repo) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        yield app, inference_pb2_grpc.InferenceStub(channel)


def records_of(app: App, model: str) -> list[BatchRecord]:
    records: list[BatchRecord] = []
    batcher = app.repository.resolve(model, 0).batcher
    assert batcher is not None
    batcher.add_hook(records.append)
    return records


def request(model: str, **arrays: np.ndarray) -> pb.PredictRequest:
    return pb.PredictRequest(model_name=model, inputs=[from_array(k, v) for k, v in arrays.items()])


async def test_concurrent_requests_share_runs_with_identical_results(served, batch_repo: Path) -> None:  # type: ignore[no-untyped-def]
    app, stub = served
    records = records_of(app, "chain")  # about 1 ms a run: requests arrive while the instance is busy
    rng = np.random.default_rng(5)
    inputs = [rng.normal(size=(1, 4)).astype(np.float32) for _ in range(32)]
    responses = await asyncio.gather(*(stub.Predict(request("chain", x=x)) for x in inputs))
    session = ort.InferenceSession(str(batch_repo / "chain" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for x, response in zip(inputs, responses, strict=True):
        np.testing.assert_array_equal(to_array(response.outputs[0]), session.run(["y"], {"x": x})[0])  # unbatched
    assert sum(r.rows for r in records) == 32
    assert len(records) < 32, f"32 concurrent requests took {len(records)} runs"
    statistics = app.repository.resolve("chain", 0).batcher.statistics  # type: ignore[union-attr]
    assert statistics.executions == len(records) and statistics.inferences == 32


async def test_different_sequence_lengths_never_share_a_run(served, batch_repo: Path) -> None:  # type: ignore[no-untyped-def]
    app, stub = served
    records = records_of(app, "sequence")
    rng = np.random.default_rng(6)
    tokens = [rng.normal(size=(2, [3, 5, 9][i % 3], 8)).astype(np.float32) for i in range(30)]
    responses = await asyncio.gather(*(stub.Predict(request("sequence", tokens=t)) for t in tokens))
    session = ort.InferenceSession(str(batch_repo / "sequence" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    for t, response in zip(tokens, responses, strict=True):
        np.testing.assert_array_equal(to_array(response.outputs[0]), session.run(["mean"], {"tokens": t})[0])
    assert sum(r.rows for r in records) == 60
    for record in records:
        assert record.inputs["tokens"].shape[0] == record.rows  # one seq length per run, rows concatenated


async def test_item_larger_than_max_batch_size_is_split_and_reassembled(served, batch_repo: Path) -> None:  # type: ignore[no-untyped-def]
    app, stub = served
    records = records_of(app, "add")
    x = {"a": np.arange(160, dtype=np.float32).reshape(40, 4), "b": np.ones((40, 4), np.float32)}
    response = await stub.BatchPredict(pb.BatchPredictRequest(requests=[request("add", **x)]))
    got = {t.name: to_array(t) for t in response.results[0].response.outputs}
    np.testing.assert_array_equal(got["sum"], x["a"] + x["b"] + 0.5)
    assert sorted(r.rows for r in records) == [8, 16, 16]


async def test_onnxruntime_failure_fails_only_the_bad_request(served) -> None:  # type: ignore[no-untyped-def]
    app, stub = served
    records = records_of(app, "gather_held")
    indices = [np.array([[i % 5]], np.int64) for i in range(40)]
    indices[17] = np.array([[9]], np.int64)  # out of the table: ONNX Runtime raises for any run holding it
    calls = [stub.Predict(request("gather_held", index=i)) for i in indices]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, grpc.aio.AioRpcError)]
    assert failed == [17]
    error = outcomes[17]
    assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == Code.INTERNAL and "inference failed" in (error.details() or "")
    for i, outcome in enumerate(outcomes):
        if i != 17:
            assert to_array(outcome.outputs[0])[0, 0] == 10.0 + i % 5  # type: ignore[union-attr]
    bad_id = (error.details() or "").split("request id ")[1].split(")")[0]
    shared, *alone = records
    assert shared.failed and len(shared.request_ids) == 40 and bad_id in shared.request_ids
    assert [r.request_ids[0] for r in alone] == list(shared.request_ids)  # each retried alone, in order
    assert [(r.failed, r.rows) for r in alone] == [(rid == bad_id, 1) for rid in shared.request_ids]
    after = await stub.Predict(request("gather_held", index=np.array([[3]], np.int64)))  # keeps serving
    assert to_array(after.outputs[0])[0, 0] == 13.0


async def test_onnxruntime_failure_in_a_shared_run_over_the_wire(served) -> None:  # type: ignore[no-untyped-def]
    app, stub = served
    records = records_of(app, "gather")
    items = [request("gather", index=np.array([[i % 5]], np.int64)) for i in range(40)]
    items[17] = request("gather", index=np.array([[9]], np.int64))
    response = await stub.BatchPredict(pb.BatchPredictRequest(requests=items))  # queued at once: one shared run
    codes = [r.status.code for r in response.results]
    assert codes == [Code.INTERNAL.value[0] if i == 17 else 0 for i in range(40)]
    assert "inference failed" in response.results[17].status.message
    for i, result in enumerate(response.results):
        if i != 17:
            assert to_array(result.response.outputs[0])[0, 0] == 10.0 + i % 5
    assert [(r.failed, len(r.request_ids)) for r in records] == [(True, 40)] + [(i == 17, 1) for i in range(40)]
    assert records[0].request_ids == tuple(r.request_ids[0] for r in records[1:])  # each retried alone, in order
    after = await stub.Predict(request("gather", index=np.array([[3]], np.int64)))
    assert to_array(after.outputs[0])[0, 0] == 13.0


async def test_timing_trailers_are_present_and_plausible(served) -> None:  # type: ignore[no-untyped-def]
    _, stub = served
    call = stub.Predict(request("add", a=np.ones((3, 4), np.float32), b=np.ones((3, 4), np.float32)))
    started = time.perf_counter()
    await call
    elapsed = time.perf_counter() - started
    timing = parse_timing(dict(await call.trailing_metadata())[SERVER_TIMING_KEY])
    assert set(timing) == {"queue", "compute", "batch_size"}
    assert 0 <= timing["queue"] < elapsed and 0 < timing["compute"] < elapsed
    assert timing["queue"] + timing["compute"] < elapsed
    assert timing["batch_size"] >= 3


async def test_full_queue_is_refused_over_the_wire(served) -> None:  # type: ignore[no-untyped-def]
    app, stub = served
    heavy = np.ones((1000, 256), np.float32)
    calls = [stub.Predict(request("slow", x=heavy)) for _ in range(12)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert refused, "12 heavy requests against max_queue_size=4 were all admitted"
    for error in refused:
        assert error.code() == Code.RESOURCE_EXHAUSTED and "max_queue_size=4" in (error.details() or "")
    assert app.repository.resolve("slow", 0).batcher.queue_depth == 0  # type: ignore[union-attr]


async def test_cancelled_call_leaves_the_queue_over_the_wire(served) -> None:  # type: ignore[no-untyped-def]
    app, stub = served
    batcher = app.repository.resolve("slow", 0).batcher
    assert batcher is not None
    heavy = np.ones((1000, 256), np.float32)  # a full batch each: they run one after another
    blockers = [stub.Predict(request("slow", x=heavy)) for _ in range(3)]
    await wait_until(lambda: batcher.in_flight == 1 and batcher.queue_depth == 2)
    victim = stub.Predict(request("slow", x=heavy[:1]))
    await wait_until(lambda: batcher.queue_depth == 3)
    victim.cancel()
    await wait_until(lambda: batcher.queue_depth <= 2)
    await asyncio.gather(*blockers)
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert batcher.queue_depth == 0
    assert batcher.statistics.by_batch_size == {1000: 3}  # the 1-row victim never ran


# The deterministic cases below drive a DynamicBatcher directly: a real session behind a gate holds the only
# instance busy for exactly as long as the test needs.


class GatedSession:
    def __init__(self, session: ModelSession) -> None:
        self.session = session
        self.gate = threading.Event()
        self.calls: list[int] = []

    def run(self, inputs: Arrays, output_names: Sequence[str]) -> Arrays:
        self.gate.wait(timeout=10)
        self.calls.append(next(iter(inputs.values())).shape[0])
        return self.session.run(inputs, output_names)


@pytest.fixture
def gated(batch_repo: Path) -> GatedSession:
    return GatedSession(ModelSession(batch_repo / "add" / "1" / "model.onnx", ModelConfig(execution_providers=["cpu"])))


def rows(n: int, value: float = 1.0) -> Arrays:
    return {"a": np.full((n, 4), value, np.float32), "b": np.ones((n, 4), np.float32)}


async def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def test_requests_accumulate_while_the_instance_is_busy(gated: GatedSession) -> None:
    batcher = DynamicBatcher([gated], model="add", version=1, max_batch_size=16)
    first = asyncio.create_task(batcher.submit(rows(1, 0), ("sum",), rows=1, request_id="first"))
    await wait_until(lambda: batcher.in_flight == 1)
    rest = [asyncio.create_task(batcher.submit(rows(1, i), ("sum",), rows=1, request_id=str(i))) for i in range(10)]
    await wait_until(lambda: batcher.queue_depth == 10)
    gated.gate.set()
    results = await asyncio.gather(first, *rest)
    assert gated.calls == [1, 10]  # the lone first request ran at once; the others shared one run
    assert [float(r.outputs["sum"][0, 0]) for r in results[1:]] == [i + 1.5 for i in range(10)]
    assert results[1].batch_size == 10 and results[1].queue_seconds > 0
    batcher.close()


async def test_queue_bound_refuses_fast(gated: GatedSession) -> None:
    batcher = DynamicBatcher([gated], model="add", version=1, max_batch_size=16, max_queue_size=3)
    tasks = [asyncio.create_task(batcher.submit(rows(1), ("sum",), rows=1, request_id="running"))]
    await wait_until(lambda: batcher.in_flight == 1)
    tasks += [asyncio.create_task(batcher.submit(rows(1), ("sum",), rows=1, request_id=str(i))) for i in range(3)]
    await wait_until(lambda: batcher.queue_depth == 3)
    with pytest.raises(Overloaded, match="max_queue_size=3"):
        await batcher.submit(rows(1), ("sum",), rows=1, request_id="over")
    with pytest.raises(Overloaded):  # a split item needing more room than is left is refused whole
        await batcher.submit(rows(40), ("sum",), rows=40, request_id="big")
    gated.gate.set()
    await asyncio.gather(*tasks)
    batcher.close()


async def test_expired_deadline_is_dropped_before_compute(gated: GatedSession) -> None:
    batcher = DynamicBatcher([gated], model="add", version=1, max_batch_size=16)
    blocker = asyncio.create_task(batcher.submit(rows(2), ("sum",), rows=2, request_id="blocker"))
    await wait_until(lambda: batcher.in_flight == 1)
    late = asyncio.create_task(batcher.submit(rows(3), ("sum",), rows=3, request_id="late",
                                              deadline=time.monotonic() + 0.02))
    await asyncio.sleep(0.05)
    gated.gate.set()
    await blocker
    with pytest.raises(DeadlineExpired, match="deadline passed"):
        await late
    assert gated.calls == [2]  # the 3-row request was never computed
    batcher.close()


async def test_cancelled_request_leaves_the_queue(gated: GatedSession) -> None:
    batcher = DynamicBatcher([gated], model="add", version=1, max_batch_size=16)
    blocker = asyncio.create_task(batcher.submit(rows(2), ("sum",), rows=2, request_id="blocker"))
    await wait_until(lambda: batcher.in_flight == 1)
    victim = asyncio.create_task(batcher.submit(rows(5), ("sum",), rows=5, request_id="victim"))
    await wait_until(lambda: batcher.queue_depth == 1)
    victim.cancel()
    await wait_until(lambda: batcher.queue_depth == 0)  # before the instance frees up
    assert batcher.in_flight == 1
    gated.gate.set()
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert gated.calls == [2]
    batcher.close()


async def test_onnxruntime_failure_fails_only_the_request_whose_own_run_fails(batch_repo: Path) -> None:
    session = ModelSession(batch_repo / "gather" / "1" / "model.onnx", ModelConfig(execution_providers=["cpu"]))
    gated = GatedSession(session)
    batcher = DynamicBatcher([gated], model="gather", version=1, max_batch_size=4)
    index = lambda i: {"index": np.array([[i]], np.int64)}  # noqa: E731
    first = asyncio.create_task(batcher.submit(index(0), ("value",), rows=1, request_id="first"))
    await wait_until(lambda: batcher.in_flight == 1)
    batch_with_bad = [asyncio.create_task(batcher.submit(index(i), ("value",), rows=1, request_id=f"b{i}"))
                      for i in (1, 9, 2, 3)]
    next_batch = [asyncio.create_task(batcher.submit(index(4), ("value",), rows=1, request_id="n"))]
    await wait_until(lambda: batcher.queue_depth == 5)
    gated.gate.set()
    assert float((await first).outputs["value"][0, 0]) == 10.0
    outcomes = await asyncio.gather(*batch_with_bad, return_exceptions=True)
    assert isinstance(outcomes[1], InferenceFailed) and "b9" in str(outcomes[1])
    assert [float(o.outputs["value"][0, 0]) for o in outcomes if not isinstance(o, BaseException)] == [11, 12, 13]
    assert float((await next_batch[0]).outputs["value"][0, 0]) == 14.0
    assert gated.calls == [1, 4, 1, 1, 1, 1, 1] and batcher.statistics.failures == 2
    batcher.close()


POISON = -1.0


class PoisonRunner:
    """y = 2 * x after a gate; a run holding POISON in any row raises, as ONNX Runtime does on bad data."""

    def __init__(self, poison_seconds: float = 0.0) -> None:
        self.gate = threading.Event()
        self.poison_seconds = poison_seconds
        self.runs: list[list[float]] = []

    def run(self, inputs: Arrays, output_names: Sequence[str]) -> Arrays:
        self.gate.wait(timeout=10)
        x = inputs["x"]
        self.runs.append(x[:, 0].tolist())
        if (x == POISON).any():
            time.sleep(self.poison_seconds)
            raise RuntimeError("poisoned row")
        return {"y": x * 2}


def x_of(value: float, width: int = 2) -> Arrays:
    return {"x": np.full((1, width), value, np.float32)}


async def test_failed_shared_run_retries_each_request_alone() -> None:
    runner = PoisonRunner()
    batcher = DynamicBatcher([runner], model="poison", version=1, max_batch_size=3)
    records: list[BatchRecord] = []
    batcher.add_hook(records.append)

    def submit(value: float, request_id: str, width: int = 2) -> asyncio.Task[BatchResult]:
        return asyncio.create_task(batcher.submit(x_of(value, width), ("y",), rows=1, request_id=request_id))

    blocker = submit(0, "blocker")
    await wait_until(lambda: batcher.in_flight == 1)
    started = time.monotonic()
    shared = [submit(1, "good1"), submit(POISON, "bad"), submit(2, "good2")]  # one full batch of 3
    behind = submit(3, "behind")  # the same shapes, queued behind the full batch
    other = submit(4, "other", width=5)  # other shapes: a batch of its own
    await wait_until(lambda: batcher.queue_depth == 5)
    await asyncio.sleep(0.02)
    runner.gate.set()
    await blocker
    good1, bad, good2 = await asyncio.gather(*shared, return_exceptions=True)
    assert isinstance(bad, InferenceFailed) and "bad" in str(bad)
    assert isinstance(good1, BatchResult) and isinstance(good2, BatchResult)
    np.testing.assert_array_equal(good1.outputs["y"], [[2, 2]])
    np.testing.assert_array_equal(good2.outputs["y"], [[4, 4]])
    assert good1.batch_size == good2.batch_size == 1
    assert good2.queue_seconds >= 0.02 and good2.queue_seconds <= time.monotonic() - started  # kept its enqueue time
    np.testing.assert_array_equal((await behind).outputs["y"], [[6, 6]])
    np.testing.assert_array_equal((await other).outputs["y"], [[8] * 5])
    # The retries run alone, first, and never merge with what waits behind them.
    assert runner.runs == [[0], [1, POISON, 2], [1], [POISON], [2], [3], [4]]
    assert [(r.failed, r.request_ids) for r in records] == [
        (False, ("blocker",)), (True, ("good1", "bad", "good2")), (False, ("good1",)), (True, ("bad",)),
        (False, ("good2",)), (False, ("behind",)), (False, ("other",)),
    ]
    assert batcher.statistics.failures == 2 and batcher.statistics.inferences == 5
    batcher.close()


async def test_failed_run_of_one_request_is_not_retried() -> None:
    runner = PoisonRunner()
    runner.gate.set()
    batcher = DynamicBatcher([runner], model="poison", version=1, max_batch_size=3)
    with pytest.raises(InferenceFailed, match="lone"):
        await batcher.submit(x_of(POISON), ("y",), rows=1, request_id="lone")
    assert runner.runs == [[POISON]] and batcher.statistics.failures == 1
    assert (await batcher.submit(x_of(5), ("y",), rows=1, request_id="next")).outputs["y"][0, 0] == 10
    batcher.close()


async def test_retry_keeps_the_request_deadline() -> None:
    runner = PoisonRunner(poison_seconds=0.3)
    batcher = DynamicBatcher([runner], model="poison", version=1, max_batch_size=3)
    blocker = asyncio.create_task(batcher.submit(x_of(0), ("y",), rows=1, request_id="blocker"))
    await wait_until(lambda: batcher.in_flight == 1)
    bad = asyncio.create_task(batcher.submit(x_of(POISON), ("y",), rows=1, request_id="bad"))
    late = asyncio.create_task(batcher.submit(x_of(1), ("y",), rows=1, request_id="late",
                                              deadline=time.monotonic() + 0.15))
    await wait_until(lambda: batcher.queue_depth == 2)
    runner.gate.set()
    await blocker
    with pytest.raises(InferenceFailed):
        await bad
    with pytest.raises(DeadlineExpired):  # its deadline passed during the failed shared run
        await late
    assert runner.runs == [[0], [POISON, 1], [POISON]]
    batcher.close()


async def test_queue_delay_waits_for_a_fuller_batch(gated: GatedSession) -> None:
    gated.gate.set()
    batcher = DynamicBatcher([gated], model="add", version=1, max_batch_size=16, max_queue_delay=0.05)
    results = await asyncio.gather(*(batcher.submit(rows(1), ("sum",), rows=1, request_id=str(i)) for i in range(5)))
    assert gated.calls == [5] and all(r.batch_size == 5 for r in results)
    batcher.close()


async def test_preferred_batch_size_cuts_there(gated: GatedSession) -> None:
    batcher = DynamicBatcher([gated], model="add", version=1, max_batch_size=16, preferred_batch_sizes=[4])
    blocker = asyncio.create_task(batcher.submit(rows(1), ("sum",), rows=1, request_id="blocker"))
    await wait_until(lambda: batcher.in_flight == 1)
    waiting = [asyncio.create_task(batcher.submit(rows(1), ("sum",), rows=1, request_id=str(i))) for i in range(6)]
    await wait_until(lambda: batcher.queue_depth == 6)
    gated.gate.set()
    await asyncio.gather(blocker, *waiting)
    assert gated.calls == [1, 4, 2]
    batcher.close()


def test_batcher_arguments_are_checked(gated: GatedSession) -> None:
    with pytest.raises(ValueError, match="at least one runner"):
        DynamicBatcher([], model="m", version=1, max_batch_size=4)
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        DynamicBatcher([gated], model="m", version=1, max_batch_size=4, preferred_batch_sizes=[8])


async def test_submit_many_answers_each_item_and_refuses_what_does_not_fit(gated: GatedSession) -> None:
    batcher = DynamicBatcher([gated], model="add", version=1, max_batch_size=4, max_queue_size=3)
    gated.gate.set()
    items = [(rows(1, float(i)), 1, f"r{i}") for i in range(3)] + [(rows(6, 9.0), 6, "big")]
    results = await batcher.submit_many(items, ("sum",))
    assert [float(r.outputs["sum"][0, 0]) for r in results[:3]] == [1.5, 2.5, 3.5]  # type: ignore[union-attr]
    assert results[3].outputs["sum"].shape == (6, 4)  # type: ignore[union-attr]  # split into runs of 4 and 2
    refused = await batcher.submit_many([(rows(1), 1, f"x{i}") for i in range(4)], ("sum",))
    assert all(isinstance(r, Overloaded) and "max_queue_size=3" in str(r) for r in refused)
    batcher.close()
