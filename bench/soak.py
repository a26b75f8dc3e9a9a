"""The soak benchmark: the server under moderate mixed load for a long run, its resident memory sampled throughout.

The server runs as its own process (`vigil serve` on loopback, free ports). Workers send a paced mix of Predict,
BatchPredict and Feedback (for predictions made earlier in the run), while a few Telemetry subscribers connect
on a fresh channel, read frames for a few seconds and disconnect, again and again: the paths that hold
per-request or per-connection state, and so could leak. The process's RSS (VmRSS in /proc) is sampled every few
seconds; the target is growth under 10% from the end of the warm-up to the end of the run. It stops the server
with SIGTERM and checks that it exits 0.

    python -m bench.soak                                  # 10 minutes (`make soak`)
    python -m bench.soak --duration 60 --warmup 15 --out /tmp/soak.json

Predictions and outcomes go to the prediction log, a SQLite file in a temporary folder here (the default kind of
store), so the process holds only its bounded write queue; the server's other windows fill during the warm-up and
then stay the same size, and `slope_last_half_mb_per_min` tells growth that keeps going from a window that filled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vigil.clients import AsyncClient, VigilError  # noqa: E402

DEFAULT_MODELS = ROOT / "server" / "models" / "default_models"
TARGET_GROWTH_PERCENT = 10.0
MIX = {"Predict": 0.6, "BatchPredict": 0.25, "Feedback": 0.15}
"""Share of calls of each kind; Feedback falls back to Predict while no prediction awaits its label."""
BATCH_ITEMS = 8
"""Items in each BatchPredict call."""


@dataclass
class Tally:
    """What the load did: calls by method and status, rows predicted, Telemetry subscriptions and frames."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    rows: int = 0
    predictions: int = 0
    """Request ids predicted: each takes a place in the server's prediction store."""
    subscriptions: int = 0
    frames: int = 0
    awaiting_feedback: deque[tuple[str, int]] = field(default_factory=lambda: deque(maxlen=2000))

    def done(self) -> int:
        return sum(self.calls.values())

    def errors(self) -> dict[str, int]:
        by_status: Counter[str] = Counter()
        for (_, status), n in self.calls.items():
            if status != "OK":
                by_status[status] += n
        return dict(by_status)


class ServerProcess:
    """`vigil serve` on 127.0.0.1 with free ports; its output goes to a log file, read for the announced ports.

    >>> server = ServerProcess(models, log)
    >>> server.target, server.pid
    >>> server.stop()   # SIGTERM; returns the exit code
    """

    def __init__(self, models: Path, log: Path, env: dict[str, str]) -> None:
        vigil = Path(sys.executable).parent / "vigil"
        command = [str(vigil), "serve", "--models", str(models), "--host", "127.0.0.1", "--port", "0",
                   "--http-port", "0"]
        self.log = log
        with log.open("w") as out:  # a file, not a pipe: an unread pipe would block the server's logging
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, **env})
        self.target = self.http = ""
        deadline = time.monotonic() + 120
        while not (self.target and self.http):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start; its log:\n{log.read_text()[-3000:]}")
            text = log.read_text()
            if grpc_port := re.search(r"gRPC listening on [\d.]+:(\d+)", text):
                self.target = f"127.0.0.1:{grpc_port.group(1)}"
            if http_port := re.search(r"HTTP listening on [\d.]+:(\d+)", text):
                self.http = f"127.0.0.1:{http_port.group(1)}"
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident set size now, from /proc/<pid>/status (VmRSS, in kB there)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no VmRSS for process {self.pid}")
        return int(match.group(1)) * 1024

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code; SIGKILL (reported as such) if it does not exit in `timeout` s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return -signal.SIGKILL


def sample_rows(models: Path, model: str) -> np.ndarray:
    """The model's sample rows (sample.csv: a header, then one row of features a line)."""
    return np.loadtxt(models / model / "sample.csv", delimiter=",", skiprows=1, dtype=np.float32, ndmin=2)


async def wait_until_serving(target: str, seconds: float = 120) -> None:
    async with AsyncClient(target, timeout=2) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(VigilError):
                if await client.health() == "SERVING":
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the server at {target} did not report SERVING within {seconds:.0f}s")


class Pacer:
    """Hands out evenly spaced start times at `rate` calls a second across all workers (0: no pacing)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


async def worker(client: AsyncClient, model: str, labels: list[str], rows: np.ndarray, pacer: Pacer,
                 tally: Tally, stop: asyncio.Event, seed: int) -> None:
    """Paced calls in the MIX proportions until `stop` is set; every outcome is counted by method and status."""
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())

    def some_rows() -> np.ndarray:
        start = rng.randrange(len(rows))
        return np.take(rows, range(start, start + rng.randint(1, 4)), axis=0, mode="wrap")

    while not stop.is_set():
        await pacer.wait()
        kind = rng.choices(kinds, weights)[0]
        if kind == "Feedback" and not tally.awaiting_feedback:
            kind = "Predict"
        try:
            if kind == "Predict":
                x = some_rows()
                prediction = await client.predict(model, {"features": x})
                tally.rows += len(x)
                tally.predictions += 1
                tally.awaiting_feedback.append((prediction.request_id, len(x)))
            elif kind == "BatchPredict":
                items = [some_rows() for _ in range(BATCH_ITEMS)]
                results = await client.batch_predict([(model, {"features": x}) for x in items])
                for x, result in zip(items, results, strict=True):  # items fail one by one, and are counted so
                    if isinstance(result, VigilError):
                        tally.calls[("BatchPredict item", result.code.name)] += 1
                    else:
                        tally.rows += len(x)
                        tally.predictions += 1
                        tally.awaiting_feedback.append((result.request_id, len(x)))
            else:
                request_id, n = tally.awaiting_feedback.popleft()
                await client.feedback(request_id, [rng.choice(labels) for _ in range(n)])
        except VigilError as exc:
            tally.calls[(kind, exc.code.name)] += 1
        else:
            tally.calls[(kind, "OK")] += 1


async def subscriber(target: str, tally: Tally, stop: asyncio.Event, seed: int) -> None:
    """Connect on a new channel, read Telemetry frames for 2-8 s, disconnect, pause; again until `stop`."""
    rng = random.Random(seed)
    while not stop.is_set():
        until = time.monotonic() + rng.uniform(2, 8)
        try:
            async with AsyncClient(target, timeout=None) as client:
                tally.subscriptions += 1
                async with contextlib.aclosing(client.telemetry(interval_ms=100)) as frames:
                    async for _ in frames:
                        tally.frames += 1
                        if stop.is_set() or time.monotonic() >= until:
                            break
        except VigilError as exc:
            tally.calls[("Telemetry", exc.code.name)] += 1
        else:
            tally.calls[("Telemetry", "OK")] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.2, 1.0))


async def drive(server: ServerProcess, args: argparse.Namespace) -> tuple[Tally, list[dict[str, float]]]:
    """Once the server is ready, run the load for `args.duration` seconds, sampling RSS; returns the tally and
    the samples."""
    await wait_until_serving(server.target)
    print(f"soak: server pid {server.pid} at {server.target}, {args.duration:g}s of load "
          f"({args.warmup:g}s warm-up)", flush=True)
    rows = sample_rows(args.models, args.model)
    async with AsyncClient(server.target, timeout=30) as probe:
        labels = (await probe.model_metadata(args.model)).labels
    if not labels:
        raise RuntimeError(f"model {args.model!r} has no labels; the soak sends feedback, so it needs a classifier")
    tally = Tally()
    stop = asyncio.Event()
    pacer = Pacer(args.rate)
    samples: list[dict[str, float]] = []
    clients = [AsyncClient(server.target, timeout=30) for _ in range(args.channels)]
    tasks = [asyncio.create_task(worker(clients[i % len(clients)], args.model, labels, rows, pacer, tally, stop, i))
             for i in range(args.concurrency)]
    tasks += [asyncio.create_task(subscriber(server.target, tally, stop, 1000 + i)) for i in range(args.subscribers)]
    started = time.monotonic()
    try:
        while True:
            elapsed = time.monotonic() - started
            samples.append({"t": round(elapsed, 2), "rss_mb": server.rss_bytes() / 2**20, "calls": tally.done(),
                            "predictions": tally.predictions})
            if elapsed >= args.duration:
                break
            if any(t.done() for t in tasks):  # a task that ends early has failed: stop and say why
                break
            await asyncio.sleep(min(args.sample_every, args.duration - elapsed))
            if server.process.poll() is not None:
                raise RuntimeError(f"the server exited with {server.process.returncode} during the run")
    finally:
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        raise RuntimeError(f"{len(failures)} load tasks failed; the first: {failures[0]!r}") from failures[0]
    return tally, samples


def summarize(samples: list[dict[str, float]], warmup: float) -> dict[str, Any]:
    """RSS at the end of the warm-up and at the end, growth between them, and the trend over the last half."""
    after = [s for s in samples if s["t"] >= warmup]
    if len(after) < 2:
        raise RuntimeError(f"no samples after the {warmup:g}s warm-up; run longer than the warm-up")
    start, end = after[0], after[-1]
    half = [s for s in after if s["t"] >= (start["t"] + end["t"]) / 2]
    slope = float(np.polyfit([s["t"] for s in half], [s["rss_mb"] for s in half], 1)[0]) * 60 if len(half) > 1 else 0.0
    growth = (end["rss_mb"] - start["rss_mb"]) / start["rss_mb"] * 100
    measured = end["t"] - start["t"]
    return {
        "rss_start_mb": round(samples[0]["rss_mb"], 1),
        "rss_warmup_end_mb": round(start["rss_mb"], 1),
        "rss_end_mb": round(end["rss_mb"], 1),
        "rss_max_after_warmup_mb": round(max(s["rss_mb"] for s in after), 1),
        "growth_percent": round(growth, 2),
        "slope_last_half_mb_per_min": round(slope, 3),
        "calls_per_s_after_warmup": round((end["calls"] - start["calls"]) / measured, 1) if measured else 0.0,
        "predictions_at_warmup_end": int(start["predictions"]),
        "target_growth_percent": TARGET_GROWTH_PERCENT,
        "target_met": growth < TARGET_GROWTH_PERCENT,
    }


def markdown(result: dict[str, Any]) -> str:
    s, load = result["summary"], result["load"]
    errors = ", ".join(f"{k} {v}" for k, v in sorted(result["errors_by_status"].items())) or "none"
    rows = [
        ("Duration / warm-up", f"{result['config']['duration']:g} s / {result['config']['warmup']:g} s"),
        ("Load", f"concurrency {result['config']['concurrency']}, {result['config']['rate']:g} calls/s target, "
                 f"{result['config']['subscribers']} Telemetry subscribers"),
        ("Calls done", f"{load['calls']} ({s['calls_per_s_after_warmup']:g}/s after warm-up), "
                       f"{load['rows_predicted']} rows predicted"),
        ("Calls by method", ", ".join(f"{k} {v}" for k, v in sorted(load["by_method"].items()))),
        ("Telemetry", f"{load['subscriptions']} subscriptions, {load['frames']} frames"),
        ("Errors by status", errors),
        ("RSS at start", f"{s['rss_start_mb']:.1f} MiB"),
        ("RSS at warm-up end", f"{s['rss_warmup_end_mb']:.1f} MiB"),
        ("RSS at end", f"{s['rss_end_mb']:.1f} MiB (max after warm-up {s['rss_max_after_warmup_mb']:.1f})"),
        ("Growth after warm-up", f"{s['growth_percent']:+.2f}% (target < {s['target_growth_percent']:g}%: "
                                 f"{'met' if s['target_met'] else 'missed'})"),
        ("Trend, last half", f"{s['slope_last_half_mb_per_min']:+.3f} MiB/min"),
        ("Predictions logged by warm-up end", f"{s['predictions_at_warmup_end']}"),
        ("Server exit on SIGTERM", str(result["server_exit_code"])),
    ]
    lines = ["| Soak | Result |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="model repository to serve")
    parser.add_argument("--model", default="breast_cancer", help="a classifier with sample.csv in its folder")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load, warm-up included")
    parser.add_argument("--warmup", type=float, default=240.0,
                        help="seconds before the RSS baseline is taken (the drift and accuracy windows and the "
                             "allocator's pools fill during it)")
    parser.add_argument("--concurrency", type=int, default=8, help="workers, each with one call in flight")
    parser.add_argument("--rate", type=float, default=200.0, help="calls a second across workers; 0: as fast as "
                        "they go")
    parser.add_argument("--channels", type=int, default=2, help="client channels the workers share")
    parser.add_argument("--subscribers", type=int, default=2, help="Telemetry subscribers that come and go")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the server, e.g. VIGIL_STORE__URL=postgresql://...")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "soak_results.json")
    args = parser.parse_args()
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    env = dict(item.split("=", 1) for item in args.server_env)

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        env.setdefault("VIGIL_STORE__URL", f"sqlite:///{tmp}/soak.db")
        server = ServerProcess(args.models, log, env)
        exit_code: int | None = None
        try:
            tally, samples = asyncio.run(drive(server, args))
        finally:
            exit_code = server.stop()
            if exit_code != 0:
                print(f"soak: the server exited with {exit_code}; the end of its log:\n{log.read_text()[-3000:]}",
                      file=sys.stderr)

    by_method: Counter[str] = Counter()
    for (method, _), n in tally.calls.items():
        by_method[method] += n
    result = {
        "config": {k: v for k, v in vars(args).items() if k not in {"models", "out"}}
        | {"model": args.model, "mix": MIX, "batch_items": BATCH_ITEMS},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "summary": summarize(samples, args.warmup),
        "load": {"calls": tally.done(), "rows_predicted": tally.rows, "subscriptions": tally.subscriptions,
                 "frames": tally.frames, "by_method": dict(by_method),
                 "by_method_and_status": {f"{m} {s}": n for (m, s), n in sorted(tally.calls.items())}},
        "errors_by_status": tally.errors(),
        "server_exit_code": exit_code,
        "samples": [{**s, "rss_mb": round(s["rss_mb"], 2)} for s in samples],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"soak: wrote {args.out}")
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
