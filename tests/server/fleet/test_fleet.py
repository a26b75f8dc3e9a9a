"""Servers sharing one store form one fleet: the Telemetry stream sums them, shows each member on request, and one
member (the holder of the lease) fires alerts and guards rollouts for all; another takes over when it goes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests import onnx_models
from tests.conftest import running_app
from tests.server.store.test_shared_store import VIGIL, listening
from tests.server.test_drift import checked_quality, fresh_sample, send
from tests.server.test_drift import training as training_fixture
from tests.telemetry.alerts.test_alertmanager import Receiver
from vigil.clients import AsyncClient, InvalidInput, Rollout, RolloutGuard, VigilError
from vigil.protos.vigil.v1 import telemetry_pb2
from vigil.server.app import App
from vigil.server.settings import AlertRuleSettings, AlertSettings, FleetSettings, QualitySettings, StoreSettings
from vigil.telemetry.quality.drift import DriftStatus, bin_counts, psi
from vigil.telemetry.quality.monitor import VersionQuality

MODEL = "breast_cancer"
FLEET = FleetSettings(tick_seconds=0.2, lease_seconds=1.0)
DRIFT_SETTINGS = QualitySettings(drift_window_rows=1000, drift_min_rows=100, drift_interval_seconds=3600)
training = training_fixture.__wrapped__  # type: ignore[attr-defined]  # the drift tests' reference rows


RULE = AlertRuleSettings(name="TooManyErrors", signal="error_ratio", op=">", threshold=0.2, severity="critical",
                         params={"window": "1m"})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def alerts(url: str) -> AlertSettings:
    return AlertSettings(rules=[RULE], interval_seconds=0.2, alertmanager_url=url, resend_seconds=3600)


async def frames(target: str, seconds: float = 15.0, **request: Any) -> AsyncIterator[telemetry_pb2.TelemetryFrame]:
    """Telemetry frames every 200 ms for at most `seconds`."""
    async with AsyncClient(target) as client:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for frame in client.telemetry(interval_ms=200, **request):
                    yield frame


async def first(target: str, check: Callable[[telemetry_pb2.TelemetryFrame], bool], what: str,
                **request: Any) -> telemetry_pb2.TelemetryFrame:
    last = None
    async for frame in frames(target, **request):
        last = frame
        if check(frame):
            return frame
    raise AssertionError(f"no frame where {what} within the time allowed; last: {last}")


def requests_total(frame: telemetry_pb2.TelemetryFrame) -> int:
    return sum(m.requests_total for m in frame.models if m.model == MODEL)


async def calls(app: App, good: int, bad: int = 0) -> None:
    async with AsyncClient(f"127.0.0.1:{app.grpc_port}") as client:
        for _ in range(good):
            await client.predict(MODEL, np.zeros((1, 30), np.float32))
        for _ in range(bad):
            with pytest.raises(InvalidInput):
                await client.predict(MODEL, np.zeros((1, 29), np.float32))


def firing_posts(receiver: Receiver) -> list[dict[str, Any]]:
    """Alerts of RULE posted to the Alertmanager (a firing one carries an end in the future, a resolved one its
    end; nothing resolves in these tests)."""
    return [alert for _, body in receiver.requests for alert in body if alert["labels"]["alertname"] == RULE.name]


async def until(predicate: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"not {what} within {seconds}s"
        await asyncio.sleep(0.05)


async def test_two_servers_are_one_fleet_with_one_decision_maker(model_repo: Path, tmp_path: Path,
                                                                 receiver: Receiver) -> None:
    store = StoreSettings(url=f"sqlite:///{tmp_path / 'vigil.db'}")
    settings = dict(store=store, fleet=FLEET, alerts=alerts(receiver.url))
    async with running_app(model_repo, **settings) as a, running_app(model_repo, **settings) as b:
        await until(lambda: a.fleet.is_leader != b.fleet.is_leader and len(a.fleet.peers) == len(b.fleet.peers) == 1,
                    "one leader of two members")
        await calls(a, 20)
        await calls(b, 17)
        here = f"127.0.0.1:{a.grpc_port}"
        frame = await first(here, lambda f: requests_total(f) >= 37, "the fleet counts 37 calls")
        assert requests_total(frame) == 37
        assert sorted(m.id for m in frame.members) == sorted([a.member_id, b.member_id]) and frame.member == ""
        assert [m.leader for m in frame.members].count(True) == 1
        assert {m.id: m.local for m in frame.members} == {a.member_id: True, b.member_id: False}

        # each member on request, from either server
        theirs = await first(here, lambda f: requests_total(f) >= 17, "member b counts its 17", member=b.member_id)
        assert requests_total(theirs) == 17 and theirs.member == b.member_id
        with pytest.raises(InvalidInput, match="no member 'no-such-member' in the fleet"):
            async for _ in frames(here, member="no-such-member"):
                pass

        # both see errors over 20%: the rule fires once, in the leader, and reaches the Alertmanager once
        await calls(a, 0, bad=10)
        await calls(b, 0, bad=10)
        leader, other = (a, b) if a.fleet.is_leader else (b, a)
        await until(lambda: len(firing_posts(receiver)) >= 1, "the alert posted")
        await asyncio.sleep(1.0)  # ample time for a second poster to post
        assert len(firing_posts(receiver)) == 1
        assert leader.monitoring.alerts.firing() and not other.monitoring.alerts.firing()
        seen = await first(f"127.0.0.1:{other.grpc_port}", lambda f: bool(f.alerts), "the alert shows on the other")
        assert [x.name for x in seen.alerts] == [RULE.name]

        # the leader goes: the other takes over within two evaluation intervals of the lease running out
        await leader.stop()
        started = time.monotonic()
        await until(lambda: other.fleet.is_leader, "the other member leading", seconds=5)
        assert time.monotonic() - started < FLEET.lease_seconds + 2 * 0.2 + 1.0
        await until(lambda: bool(other.monitoring.alerts.firing()), "the alert firing in the new leader")


async def test_a_rollout_set_on_one_member_routes_on_every_member(rollout_repo: Path, tmp_path: Path) -> None:
    store = StoreSettings(url=f"sqlite:///{tmp_path / 'vigil.db'}")
    async with running_app(rollout_repo, store=store, fleet=FLEET) as a, \
            running_app(rollout_repo, store=store, fleet=FLEET) as b:
        async with AsyncClient(f"127.0.0.1:{a.grpc_port}") as client:
            await client.set_rollout("ab", Rollout(weights={1: 70, 2: 30}))
        await until(lambda: (state := b.rollouts.get("ab")) is not None
                    and state.config.weights == {1: 70.0, 2: 30.0}, "the rollout in force on the other member")
        assert b.rollouts.get("ab").revision == a.rollouts.get("ab").revision
        async with AsyncClient(f"127.0.0.1:{b.grpc_port}") as client:
            await client.set_rollout("ab", None)
        await until(lambda: a.rollouts.get("ab") is None, "the cleared rollout cleared on the other member")


async def test_two_processes_on_postgresql_one_fleet_and_the_leader_killed(
        model_repo: Path, postgres_url: str, tmp_path: Path, receiver: Receiver) -> None:
    config = tmp_path / "vigil.toml"
    config.write_text(f"""
[fleet]
tick_seconds = 0.2
lease_seconds = 1.0

[alerts]
interval_seconds = 0.2
alertmanager_url = "{receiver.url}"
resend_seconds = 3600

[[alerts.rules]]
name = "{RULE.name}"
signal = "error_ratio"
op = ">"
threshold = 0.2
severity = "critical"
params = {{ window = "1m" }}
""")
    env = {**os.environ, "VIGIL_STORE__URL": postgres_url, "VIGIL_CONFIG_FILE": str(config),
           "VIGIL_LOG_LEVEL": "WARNING"}
    processes = [await asyncio.create_subprocess_exec(
        VIGIL, "serve", "--models", str(model_repo), "--port", "0", "--http-port", "0",
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path) for _ in range(2)]
    try:
        targets = [await listening(p) for p in processes]
        frame = await first(targets[0], lambda f: len(f.members) == 2 and sum(m.leader for m in f.members) == 1,
                            "two members, one leading")
        for target in targets:
            async with AsyncClient(target) as client:
                for _ in range(3):
                    with pytest.raises(InvalidInput):
                        await client.predict(MODEL, np.zeros((1, 29), np.float32))
        await until(lambda: len(firing_posts(receiver)) >= 1, "the alert posted")
        await asyncio.sleep(1.0)
        assert len(firing_posts(receiver)) == 1

        [leader] = [m for m in frame.members if m.leader]
        survivor = next(t for t, p in zip(targets, processes, strict=True) if p.pid != leader.pid)
        os.kill(leader.pid, signal.SIGKILL)
        after = await first(survivor, lambda f: len(f.members) == 1 and f.members[0].leader,
                            "the survivor alone and leading")
        assert after.members[0].pid != leader.pid
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await asyncio.wait_for(process.wait(), 30)


async def test_the_command_line_lists_the_fleet_and_watches_one_member(model_repo: Path, tmp_path: Path) -> None:
    store = StoreSettings(url=f"sqlite:///{tmp_path / 'vigil.db'}")
    async with running_app(model_repo, store=store, fleet=FLEET) as a, \
            running_app(model_repo, store=store, fleet=FLEET) as b:
        await until(lambda: len(a.fleet.peers) == len(b.fleet.peers) == 1, "two members")
        await calls(b, 5)
        target = f"127.0.0.1:{a.grpc_port}"

        def run(*args: str) -> str:
            done = subprocess.run([VIGIL, *args, "--target", target], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return done.stdout

        listed = await asyncio.to_thread(run, "fleet")
        lines = {line.split()[0]: line for line in listed.splitlines()[1:]}
        assert set(lines) == {a.member_id, b.member_id}
        assert "answered" in lines[a.member_id] and "answered" not in lines[b.member_id]
        assert sum("leader" in line for line in lines.values()) == 1
        watched = await asyncio.to_thread(run, "watch", "--member", b.member_id, "--frames", "2", "--interval", "0.2")
        assert f"member {b.member_id}" in watched

        # the web dashboard's stream: the fleet by default, one member with ?member=
        async with aiohttp.ClientSession(f"http://127.0.0.1:{a.http_port}") as session:
            async with session.get("/telemetry/stream", params={"member": "nobody"}) as response:
                assert response.status == 400 and "no member 'nobody'" in await response.text()
            for member in ("", b.member_id):
                async with session.get("/telemetry/stream", params={"member": member}) as response:
                    line = await response.content.readline()
                frame = json.loads(line.decode().removeprefix("data: "))
                assert frame["member"] == member and len(frame["members"]) == 2


async def test_the_leader_rolls_back_a_canary_failing_on_another_member(rollout_repo: Path, tmp_path: Path) -> None:
    """All traffic reaches the member that does not lead: the leader judges the canary on the fleet's counts, rolls
    it back, and the other member routes by the rolled-back split."""
    store = StoreSettings(url=f"sqlite:///{tmp_path / 'vigil.db'}")
    settings = dict(store=store, fleet=FLEET, rollouts={"interval_seconds": 0.1})
    async with running_app(rollout_repo, **settings) as a, running_app(rollout_repo, **settings) as b:
        await until(lambda: a.fleet.is_leader != b.fleet.is_leader and len(a.fleet.peers) == 1, "one leader")
        leader, other = (a, b) if a.fleet.is_leader else (b, a)
        guard = RolloutGuard(window_seconds=5, for_seconds=0.5, min_requests=20, max_error_ratio_increase=0.05)
        async with AsyncClient(f"127.0.0.1:{other.grpc_port}") as client:
            await client.set_rollout("triage", Rollout(weights={1: 50, 2: 50}, guard=guard))
            rng = np.random.default_rng(3)
            deadline = time.monotonic() + 30
            while (state := other.rollouts.get("triage")) is None or not state.rolled_back:
                assert time.monotonic() < deadline, "the failing canary was not rolled back"
                row = rng.normal(0, 1, (1, 3)).astype(np.float32)
                row[0, 0] = 9.0 if rng.random() < 0.3 else row[0, 0]  # 30% of rows make version 2 fail
                with contextlib.suppress(VigilError):
                    await client.predict("triage", {"features": row})
            assert state.config.weights[2] == 0 and "version 2 rolled back" in state.reason
            assert leader.rollouts.get("triage").revision == state.revision  # decided by the leader, adopted here
            for _ in range(20):
                answer = await client.predict("triage", {"features": np.full((1, 3), 9.0, np.float32)})
                assert answer.model_version == 1


async def test_a_member_starting_with_the_same_config_takes_the_fleets_rollout(tmp_path: Path) -> None:
    """config.toml splits 90/10; an operator changes it to 50/50 through the API; a member that starts (or restarts)
    with the same config.toml takes the fleet's 50/50 and does not put 90/10 back. A changed config.toml does."""
    root = tmp_path / "models"
    for version, offset in ((1, 0.0), (2, 100.0)):
        onnx_models.add_model(root / "ab" / str(version) / "model.onnx", offset=offset)
    base = 'max_batch_size = 16\nexecution_providers = ["cpu"]\n'
    (root / "ab" / "config.toml").write_text(base + "[rollout]\nweights = { 1 = 90, 2 = 10 }\n")
    store = StoreSettings(url=f"sqlite:///{tmp_path / 'vigil.db'}")
    async with running_app(root, store=store, fleet=FLEET) as a:
        assert a.rollouts.get("ab").config.weights == {1: 90.0, 2: 10.0}
        async with AsyncClient(f"127.0.0.1:{a.grpc_port}") as client:
            await client.set_rollout("ab", Rollout(weights={1: 50, 2: 50}))
        await asyncio.sleep(3 * FLEET.tick_seconds)  # shared
        async with running_app(root, store=store, fleet=FLEET) as b:
            assert b.rollouts.get("ab").config.weights == {1: 50.0, 2: 50.0}
            await asyncio.sleep(3 * FLEET.tick_seconds)
            assert a.rollouts.get("ab").config.weights == {1: 50.0, 2: 50.0}
        (root / "ab" / "config.toml").write_text(base + "[rollout]\nweights = { 1 = 80, 2 = 20 }\n")
        async with running_app(root, store=store, fleet=FLEET) as c:
            assert c.rollouts.get("ab").config.weights == {1: 80.0, 2: 20.0}
            await until(lambda: a.rollouts.get("ab").config.weights == {1: 80.0, 2: 20.0},
                        "the changed config in force on the other member")


async def test_drift_is_judged_on_every_members_rows(model_repo: Path, tmp_path: Path) -> None:
    """Shifted rows reach two members, 600 and 60: the second has too few to judge alone (100 at least), yet both
    see the fleet's drift over all 660, as PSI of the pooled rows gives it."""
    x, _ = training()
    shifted = fresh_sample(x, 660, seed=2)
    shifted[:, 0] += x[:, 0].std()  # "mean radius" one standard deviation up
    store = StoreSettings(url=f"sqlite:///{tmp_path / 'vigil.db'}")
    settings = dict(store=store, fleet=FLEET, quality=DRIFT_SETTINGS)
    async with running_app(model_repo, **settings) as a, running_app(model_repo, **settings) as b:
        async with AsyncClient(f"127.0.0.1:{a.grpc_port}") as client:
            await send(client, shifted[:600])
        async with AsyncClient(f"127.0.0.1:{b.grpc_port}") as client:
            await send(client, shifted[600:])
        quality_a, quality_b = checked_quality(a), checked_quality(b)
        assert quality_a.own_drift is not None and quality_a.own_drift.window_rows == 600
        # 60 rows: too few to judge on its own, but counted for the fleet
        assert quality_b.own_drift is not None and quality_b.own_drift.window_rows == 60

        def pooled(quality: VersionQuality) -> bool:
            return quality.drift is not None and quality.drift.window_rows == 660

        await until(lambda: pooled(quality_a) and pooled(quality_b), "both members judging the pooled rows")
        profile = quality_a.profile
        assert profile is not None
        radius = profile.features[0]
        expected = psi(np.asarray(radius.proportions), bin_counts(shifted[:, 0], np.asarray(radius.edges)))
        for quality in (quality_a, quality_b):
            assert quality.drift is not None and quality.drift.features[0].psi == pytest.approx(expected, rel=1e-6)
            assert quality.drift.features[0].psi_status is DriftStatus.DRIFT
