"""Rollouts on a real server: weighted and sticky splits, shadow copies, run-time changes, the comparison in the
Telemetry stream, automatic rollback of a faulty canary and step-wise promotion of a healthy one."""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests import onnx_models
from tests.conftest import expect, running_app
from vigil.clients import AsyncClient, InvalidInput, Rollout, RolloutGuard, RolloutPromotion
from vigil.protos.tensors import from_array, to_array
from vigil.protos.vigil.v1 import inference_pb2 as pb
from vigil.protos.vigil.v1 import inference_pb2_grpc, rollout_pb2, telemetry_pb2
from vigil.server.app import App
from vigil.server.models.rollout_config import RolloutConfig
from vigil.server.models.versions import VersionState
from vigil.server.rollouts.splits import Rollouts

Kind = telemetry_pb2.TelemetryEvent.Kind
CLASSIFIER_CONFIG = 'max_batch_size = 64\nlabels = ["red", "green", "blue"]\nprobability_output = "probabilities"\n'


@pytest.fixture(scope="module")
def rollout_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ab`: versions that add 0, 100 and 200 (the answer shows which ran); `triage`: a classifier whose version 2
    fails rows with a first feature above 5, version 3 is a copy of version 1, version 4 answers differently."""
    root = tmp_path_factory.mktemp("rollout_models")
    for version, offset in ((1, 0.0), (2, 100.0), (3, 200.0)):
        onnx_models.add_model(root / "ab" / str(version) / "model.onnx", offset=offset)
    (root / "ab" / "config.toml").write_text('max_batch_size = 16\nexecution_providers = ["cpu"]\n')
    onnx_models.classifier_model(root / "triage" / "1" / "model.onnx")
    onnx_models.classifier_model(root / "triage" / "2" / "model.onnx", fail_above=5.0)
    onnx_models.classifier_model(root / "triage" / "3" / "model.onnx")
    onnx_models.classifier_model(root / "triage" / "4" / "model.onnx", weights=onnx_models.CLASSIFIER_WEIGHTS[:, ::-1])
    (root / "triage" / "config.toml").write_text(CLASSIFIER_CONFIG)
    return root


@pytest.fixture
async def server(rollout_repo: Path) -> AsyncIterator[App]:
    async with running_app(rollout_repo, rollouts={"interval_seconds": 0.1}, alerts={"interval_seconds": 0.2}) as app:
        yield app


@pytest.fixture
async def stub(server: App) -> AsyncIterator[inference_pb2_grpc.InferenceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield inference_pb2_grpc.InferenceStub(channel)


def ab_request(version: int = 0) -> pb.PredictRequest:
    ones = np.ones((1, 4), np.float32)
    return pb.PredictRequest(model_name="ab", model_version=version,
                             inputs=[from_array("a", ones), from_array("b", ones)], output_names=["sum"])


def triage_request(features: np.ndarray) -> pb.PredictRequest:
    return pb.PredictRequest(model_name="triage", inputs=[from_array("features", features.astype(np.float32))])


def rollout(weights: dict[int, float], **fields: object) -> rollout_pb2.SetRolloutRequest:
    return rollout_pb2.SetRolloutRequest(model_name=fields.pop("model", "ab"),  # type: ignore[arg-type]
                                rollout=rollout_pb2.Rollout(weights=weights, **fields))  # type: ignore[arg-type]


async def wait_for(condition: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_weights_are_honoured_over_10000_requests(stub: inference_pb2_grpc.InferenceStub) -> None:
    await stub.SetRollout(rollout({1: 90, 2: 10}))
    item = ab_request()
    served: collections.Counter[int] = collections.Counter()
    for _ in range(200):
        response = await stub.BatchPredict(pb.BatchPredictRequest(requests=[item] * 50))
        for result in response.results:
            assert result.status.code == 0, result.status.message
            served[result.response.model_version] += 1
    assert sum(served.values()) == 10_000 and set(served) == {1, 2}
    sd = (10_000 * 0.1 * 0.9) ** 0.5  # binomial: 30
    print(f"90/10 over 10,000 requests: {dict(served)}")
    assert abs(served[2] - 1000) < 5 * sd, served


async def test_sticky_keys_never_switch_versions(stub: inference_pb2_grpc.InferenceStub) -> None:
    await stub.SetRollout(rollout({1: 50, 2: 50}, sticky_key="x-patient-id"))
    seen: dict[str, set[int]] = collections.defaultdict(set)
    for _ in range(4):
        for patient in range(150):
            response = await stub.Predict(ab_request(), metadata=(("x-patient-id", f"patient-{patient}"),))
            seen[f"patient-{patient}"].add(response.model_version)
    assert all(len(versions) == 1 for versions in seen.values()), seen
    on_two = sum(versions == {2} for versions in seen.values())
    assert 40 < on_two < 110  # about half of 150 keys
    # without the key the pick is random: both versions answer
    anonymous = {(await stub.Predict(ab_request())).model_version for _ in range(60)}
    assert anonymous == {1, 2}


async def test_a_named_version_bypasses_the_split(server: App, stub: inference_pb2_grpc.InferenceStub) -> None:
    await stub.SetRollout(rollout({1: 10, 2: 90}, shadow_version=3))
    for _ in range(30):
        assert (await stub.Predict(ab_request(version=1))).model_version == 1
    await asyncio.sleep(0.2)
    assert server.dataplane.rollouts.get("ab") is not None
    text = _metrics(server)
    assert 'vigil_shadow_requests_total{code="OK",model="ab",version="3"}' not in text


async def test_shadow_answers_are_recorded_but_never_returned(server: App,
                                                              stub: inference_pb2_grpc.InferenceStub) -> None:
    await stub.SetRollout(rollout({1: 100}, shadow_version=3))
    for _ in range(40):
        response = await stub.Predict(ab_request())
        assert response.model_version == 1
        assert to_array(response.outputs[0]).reshape(-1).tolist() == [2.0] * 4  # not 202
    await wait_for(lambda: 'vigil_shadow_requests_total{code="OK",model="ab",version="3"} 40.0' in _metrics(server))


async def test_shadow_agreement_is_measured_per_row(server: App, stub: inference_pb2_grpc.InferenceStub) -> None:
    rng = np.random.default_rng(7)
    features = rng.normal(0, 1, (200, 3)).astype(np.float32)
    await stub.SetRollout(rollout({1: 100}, model="triage", shadow_version=4))
    ids = []
    for row in features:
        response = await stub.Predict(triage_request(row[None, :]))
        assert response.model_version == 1
        ids.append(response.request_id)
    served = np.argmax(features @ onnx_models.CLASSIFIER_WEIGHTS, 1)
    expected = (served == np.argmax(features @ onnx_models.CLASSIFIER_WEIGHTS[:, ::-1], 1)).sum()
    await wait_for(lambda: f'vigil_shadow_comparisons_total{{model="triage",outcome="agree",version="4"}} '
                           f'{float(expected)}' in _metrics(server))
    assert f'outcome="disagree",version="4"}} {float(200 - expected)}' in _metrics(server)
    frame = await _rollout_frame(stub, "triage", lambda r: any(v.compared_rows == 200 for v in r.versions)
                                 and sum(r.versions[0].predictions.values()) == 200)
    shadow = next(v for v in frame.versions if v.version == "4")
    assert shadow.role == "shadow" and shadow.agreement == pytest.approx(expected / 200)
    stable = next(v for v in frame.versions if v.version == "1")
    assert stable.role == "stable" and stable.requests == 200 and stable.weight == 100.0
    assert sum(stable.predictions.values()) == 200
    # feedback saying the served answers were right reaches the shadow's answers too: its accuracy is its agreement
    names = ["red", "green", "blue"]
    for request_id, label in zip(ids, served, strict=True):
        await stub.Feedback(pb.FeedbackRequest(request_id=request_id, labels=[names[label]]))
    frame = await _rollout_frame(stub, "triage", lambda r: all(v.labelled_rows == 200 for v in r.versions))
    by_version = {v.version: v for v in frame.versions}
    assert by_version["1"].accuracy == 1.0
    assert by_version["4"].accuracy == pytest.approx(expected / 200)
    text = _metrics(server)  # the shadow's labelled rows count in the feedback counters the report reads
    assert 'vigil_feedback_total{model="triage",version="4"} 200.0' in text
    assert f'vigil_feedback_correct_total{{model="triage",version="4"}} {float(expected)}' in text


async def test_changes_apply_at_run_time_without_dropping_requests(stub: inference_pb2_grpc.InferenceStub) -> None:
    failures: list[BaseException] = []
    served: collections.Counter[int] = collections.Counter()
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                served[(await stub.Predict(ab_request())).model_version] += 1
            except grpc.aio.AioRpcError as exc:
                failures.append(exc)

    workers = [asyncio.create_task(load()) for _ in range(8)]
    for weights in ({1: 100}, {2: 100}, {1: 50, 2: 50}, {3: 100}, {1: 1, 3: 1}) * 4:
        await stub.SetRollout(rollout(weights))
        await asyncio.sleep(0.05)
    await stub.SetRollout(rollout_pb2.SetRolloutRequest(model_name="ab", clear=True))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*workers)
    assert not failures
    assert set(served) == {1, 2, 3} and sum(served.values()) > 100
    status = await stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name="ab"))
    assert status.phase == "none" and not status.rollout.weights


async def test_bad_rollouts_answer_invalid_argument(stub: inference_pb2_grpc.InferenceStub) -> None:
    await expect(stub.SetRollout(rollout({1: 90, 7: 10})), grpc.StatusCode.INVALID_ARGUMENT, "no version 7")
    await expect(stub.SetRollout(rollout({1: 0})), grpc.StatusCode.INVALID_ARGUMENT, "above 0")
    await expect(stub.SetRollout(rollout({1: 50, 2: 50}, sticky_key="Bad Key")), grpc.StatusCode.INVALID_ARGUMENT,
                 "sticky_key")
    await expect(stub.SetRollout(rollout({1: 1}, model="nope")), grpc.StatusCode.NOT_FOUND, "nope")
    await expect(stub.GetRollout(rollout_pb2.GetRolloutRequest()), grpc.StatusCode.INVALID_ARGUMENT, "model_name")
    status = await stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name="ab"))
    assert status.phase == "none"


async def test_a_faulty_canary_is_rolled_back_with_an_event(server: App,
                                                            stub: inference_pb2_grpc.InferenceStub) -> None:
    events = await _events(stub)
    guard = rollout_pb2.RolloutGuard(window_seconds=5, for_seconds=0.5, min_requests=20, max_error_ratio_increase=0.05)
    await stub.SetRollout(rollout({1: 50, 2: 50}, model="triage", guard=guard))
    rng = np.random.default_rng(3)
    errors_on = collections.Counter()
    started = time.monotonic()
    deadline = started + 20
    while (await stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name="triage"))).phase != "rolled_back":
        assert time.monotonic() < deadline, "the faulty canary was not rolled back"
        row = rng.normal(0, 1, (1, 3))
        row[0, 0] = 9.0 if rng.random() < 0.3 else row[0, 0]  # 30% of rows make version 2 fail
        try:
            await stub.Predict(triage_request(row))
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INTERNAL
            errors_on["canary"] += 1
    assert errors_on["canary"] > 0
    print(f"rolled back after {time.monotonic() - started:.1f} s, {errors_on['canary']} failed calls")
    status = await stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name="triage"))
    assert status.rollout.weights[2] == 0 and "version 2 rolled back" in status.reason
    assert "error ratio" in status.reason
    for _ in range(50):  # all traffic is back on the stable version
        row = np.array([[9.0, 0.0, 0.0]])
        assert (await stub.Predict(triage_request(row))).model_version == 1
    seen = await events.until(lambda e: e.kind == Kind.ROLLOUT_ROLLED_BACK)
    rolled = [e for e in seen if e.kind == Kind.ROLLOUT_ROLLED_BACK]
    assert len(rolled) == 1 and rolled[0].model == "triage" and rolled[0].version == "2"
    assert [e.kind for e in seen if e.kind == Kind.ROLLOUT_CHANGED]  # the set came first
    assert server.dataplane.rollouts.rolled_back_readings() == [({"model": "triage", "version": "1"}, 0.0),
                                                                 ({"model": "triage", "version": "2"}, 1.0)]
    assert server.monitoring is not None

    def firing() -> list[str]:
        return [f"{a.name} {a.model} v{a.version}" for a in server.monitoring.alert_states()]  # type: ignore[union-attr]

    await wait_for(lambda: "VigilCanaryRolledBack triage v2" in firing())
    assert 'vigil_rollout_rolled_back{model="triage",version="2"} 1.0' in _metrics(server)
    await stub.SetRollout(rollout({1: 100}, model="triage"))  # a new rollout: the alert resolves
    await wait_for(lambda: "VigilCanaryRolledBack triage v2" not in firing())
    await events.close()


async def test_a_healthy_canary_is_promoted_step_by_step(server: App, stub: inference_pb2_grpc.InferenceStub) -> None:
    events = await _events(stub)
    guard = rollout_pb2.RolloutGuard(window_seconds=5, for_seconds=0.5, min_requests=10, max_error_ratio_increase=0.05,
                                     max_p99_ratio=50)
    await stub.SetRollout(rollout({1: 90, 3: 10}, model="triage", guard=guard,
                                  promotion=rollout_pb2.RolloutPromotion(steps=[10, 50, 100], hold_seconds=0.5)))
    rng = np.random.default_rng(5)
    started = time.monotonic()
    deadline = started + 30
    while (await stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name="triage"))).phase != "promoted":
        assert time.monotonic() < deadline, "the healthy canary was not promoted"
        await stub.Predict(triage_request(rng.normal(0, 1, (1, 3))))
    print(f"promoted 10 -> 50 -> 100 in {time.monotonic() - started:.1f} s")
    status = await stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name="triage"))
    assert dict(status.rollout.weights) == {3: 100.0} and status.rollout.stable_version == 3
    assert "promoted to stable" in status.reason
    for _ in range(20):
        assert (await stub.Predict(triage_request(rng.normal(0, 1, (1, 3))))).model_version == 3
    seen = await events.until(lambda e: e.kind == Kind.ROLLOUT_PROMOTED and "stable" in e.message)
    promoted = [e.message for e in seen if e.kind == Kind.ROLLOUT_PROMOTED]
    assert len(promoted) == 2 and "50%" in promoted[0] and "promoted to stable" in promoted[1]
    await events.close()


async def test_the_config_file_rollout_applies_and_changes_without_reloading(tmp_path: Path) -> None:
    root = tmp_path / "models"
    for version, offset in ((1, 0.0), (2, 100.0)):
        onnx_models.add_model(root / "ab" / str(version) / "model.onnx", offset=offset)
    base = 'max_batch_size = 16\nexecution_providers = ["cpu"]\n'
    (root / "ab" / "config.toml").write_text(base + "[rollout]\nweights = { 1 = 100, 2 = 0 }\n")
    async with running_app(root) as app, grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        # without the split, requests would go to the highest version, 2
        assert {(await stub.Predict(ab_request())).model_version for _ in range(20)} == {1}
        before = dict(app.repository.get("ab").versions)
        (root / "ab" / "config.toml").write_text(base + "[rollout]\nweights = { 1 = 0, 2 = 100 }\nstable = 2\n")
        await stub.LoadModel(pb.LoadModelRequest(model_name="ab"))
        assert {(await stub.Predict(ab_request())).model_version for _ in range(20)} == {2}
        after = app.repository.get("ab").versions
        assert all(after[n] is before[n] for n in before), "a rollout change reloaded a version"
        status = await stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name="ab"))
        assert status.reason == "set (config)"
        (root / "ab" / "config.toml").write_text(base)
        await stub.LoadModel(pb.LoadModelRequest(model_name="ab"))
        assert (await stub.GetRollout(rollout_pb2.GetRolloutRequest(model_name="ab"))).phase == "none"


async def test_a_not_ready_choice_falls_back_to_the_stable_version(rollout_repo: Path) -> None:
    rollouts_seen: list[int] = []
    async with running_app(rollout_repo) as app:
        rollouts: Rollouts = app.dataplane.rollouts
        rollouts.set("ab", RolloutConfig(weights={1: 50, 2: 50}))
        version_two = app.repository.get("ab").versions[2]
        version_two.state = VersionState.FAILED  # as if its reload had failed
        for _ in range(30):
            version, shadow = rollouts.resolve("ab", 0)
            rollouts_seen.append(version.version)
            assert shadow is None
    assert set(rollouts_seen) == {1}


def _metrics(server: App) -> str:
    from prometheus_client.exposition import generate_latest

    return generate_latest(server.metrics_registry).decode()


async def _rollout_frame(stub: inference_pb2_grpc.InferenceStub, model: str, ready: object
                         ) -> telemetry_pb2.RolloutTelemetry:
    stream = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100, sections=["rollouts"], models=[model]))
    deadline = time.monotonic() + 15
    try:
        async for frame in stream:
            for entry in frame.rollouts:
                if entry.model == model and ready(entry):  # type: ignore[operator]
                    return entry
            assert time.monotonic() < deadline, "no matching rollout frame"
    finally:
        stream.cancel()
    raise AssertionError("the stream ended")


class _Events:
    """Telemetry events read in the background from the moment of subscription."""

    def __init__(self, stub: inference_pb2_grpc.InferenceStub) -> None:
        self.seen: list[telemetry_pb2.TelemetryEvent] = []
        self.frames = 0
        self._stream = stub.Telemetry(telemetry_pb2.TelemetryRequest(interval_ms=100, sections=["events"]))
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self._stream:
            self.frames += 1
            self.seen.extend(frame.events)

    async def until(self, condition: object, seconds: float = 10.0) -> list[telemetry_pb2.TelemetryEvent]:
        await wait_for(lambda: any(condition(e) for e in self.seen), seconds)  # type: ignore[operator]
        return list(self.seen)

    async def close(self) -> None:
        self._stream.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass


async def _events(stub: inference_pb2_grpc.InferenceStub) -> _Events:
    """Subscribed once its first frame arrived: every later event reaches it."""
    events = _Events(stub)
    await wait_for(lambda: events.frames > 0)
    return events


async def test_the_client_and_the_cli_set_show_and_clear_a_rollout(server: App) -> None:
    target = f"127.0.0.1:{server.grpc_port}"
    async with AsyncClient(target) as client:
        info = await client.set_rollout("ab", Rollout(
            weights={1: 80, 2: 20}, sticky_key="x-user",
            guard=RolloutGuard(window_seconds=60, max_p99_ratio=2.0),
            promotion=RolloutPromotion(steps=[20, 100], hold_seconds=3600)))
        assert info.phase == "promoting" and info.step == 0
        assert info.rollout is not None and info.rollout.guard is not None
        assert info.rollout.guard.max_p99_ratio == 2.0 and info.rollout.guard.max_disagreement is None
        versions = {(await client.predict("ab", {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)},
                                          metadata=[("x-user", "u-42")])).model_version for _ in range(20)}
        assert len(versions) == 1
        with pytest.raises(InvalidInput, match="no version 9"):
            await client.set_rollout("ab", Rollout(weights={9: 1}))
    code, out, err = await _vigil("rollout", "ab", "--target", target)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["phase"] == "promoting" and shown["rollout"]["weights"] == {"1": 80.0, "2": 20.0}
    code, out, err = await _vigil("rollout", "ab", "--weights", "1=50,3=50", "--shadow", "2", "--target", target)
    assert code == 0, err
    assert server.dataplane.rollouts.get("ab").config.shadow == 2  # type: ignore[union-attr]
    code, out, err = await _vigil("rollout", "ab", "--weights", "1=oops", "--target", target)
    assert code != 0 and "VERSION=WEIGHT" in err
    code, out, err = await _vigil("rollout", "ab", "--clear", "--target", target)
    assert code == 0 and json.loads(out)["phase"] == "none"


async def _vigil(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(str(Path(sys.executable).parent / "vigil"), *args,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_open_inference_protocol_requests_follow_the_split_too(server: App) -> None:
    from vigil.protos.inference import grpc_service_pb2 as oip
    from vigil.protos.inference import grpc_service_pb2_grpc

    def infer(version: str, key: str) -> tuple[oip.ModelInferRequest, tuple[tuple[str, str], ...]]:
        request = oip.ModelInferRequest(model_name="ab", model_version=version)
        for name in ("a", "b"):
            request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
            request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
        return request, (("x-user", key),)

    server.dataplane.rollouts.set("ab", RolloutConfig(weights={1: 50, 3: 50}, sticky_key="x-user"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        by_key: dict[str, set[str]] = collections.defaultdict(set)
        for _ in range(3):
            for key in range(40):
                request, metadata = infer("", f"user-{key}")
                by_key[f"user-{key}"].add((await stub.ModelInfer(request, metadata=metadata)).model_version)
        named, metadata = infer("2", "user-1")
        assert (await stub.ModelInfer(named, metadata=metadata)).model_version == "2"
    assert all(len(v) == 1 for v in by_key.values())
    assert set().union(*by_key.values()) == {"1", "3"}


async def test_the_comparison_shows_each_versions_drift_and_confidence(tmp_path: Path) -> None:
    import shutil

    from sklearn.datasets import load_breast_cancer

    from vigil.server.settings import DEFAULT_MODELS_DIR

    root = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS_DIR / "breast_cancer", root / "breast_cancer",
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copytree(root / "breast_cancer" / "1", root / "breast_cancer" / "2")  # the same model and profile
    rows = load_breast_cancer().data[:200].astype(np.float32)
    async with running_app(root, rollouts={"interval_seconds": 0.1}) as app, \
            AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        await client.set_rollout("breast_cancer", Rollout(weights={1: 100}, shadow_version=2))
        for start in range(0, 200, 10):
            assert (await client.predict("breast_cancer", rows[start:start + 10])).model_version == 1
        quality = app.monitoring.quality  # type: ignore[union-attr]
        assert quality is not None
        await wait_for(lambda: 'vigil_shadow_requests_total{code="OK",model="breast_cancer",version="2"} 20.0'
                       in _metrics(app))
        quality.process()
        quality.check_drift()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            frame = await _rollout_frame(inference_pb2_grpc.InferenceStub(channel), "breast_cancer",
                                         lambda r: all(v.drift_status for v in r.versions))
    by_version = {v.version: v for v in frame.versions}
    served, shadow = by_version["1"], by_version["2"]
    assert served.drift_status == shadow.drift_status and served.drift_score == pytest.approx(shadow.drift_score)
    assert served.mean_confidence == pytest.approx(shadow.mean_confidence)
    assert dict(served.predictions) == dict(shadow.predictions) and sum(served.predictions.values()) == 200
    assert shadow.agreement == 1.0 and shadow.compared_rows == 200


async def test_shadow_copies_past_the_limit_are_skipped_and_counted(rollout_repo: Path) -> None:
    async with running_app(rollout_repo, rollouts={"max_shadow_in_flight": 0}) as app, \
            grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        await stub.SetRollout(rollout({1: 100}, shadow_version=3))
        for _ in range(25):
            assert (await stub.Predict(ab_request())).model_version == 1
        text = _metrics(app)
        assert 'vigil_shadow_skipped_total{model="ab",version="3"} 25.0' in text
        assert not [line for line in text.splitlines() if line.startswith("vigil_shadow_requests_total{")]
        assert not app.dataplane._shadows


async def test_no_shadow_task_outlives_its_run(server: App, stub: inference_pb2_grpc.InferenceStub) -> None:
    await stub.SetRollout(rollout({1: 100}, shadow_version=2))
    await asyncio.gather(*(stub.Predict(ab_request()) for _ in range(200)))
    await wait_for(lambda: 'vigil_shadow_requests_total{code="OK",model="ab",version="2"} 200.0' in _metrics(server))
    await wait_for(lambda: not server.dataplane._shadows)
