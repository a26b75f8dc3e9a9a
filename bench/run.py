"""The batching benchmark: the server against the in-process ONNX Runtime ceiling, measured in one run.

For each workload (the bundled tabular classifier, a MiniLM-L6 text encoder) it measures
  * the ceiling: onnxruntime `session.run` alone in this process, same threads, batch 1/8/32/64;
  * the server (its own process) under a closed-loop load generator (another process) at several
    concurrencies, in three modes: batching on, batching off (max_batch_size 1), BatchPredict with 64 rows
    per call. Points are interleaved and repeated; medians are reported.
It writes docs/benchmark_results.json, docs/benchmark.png, and the results section of docs/benchmarks.md.

    python bench/build_models.py --out bench/models      # once (see the Makefile's `bench` target)
    python bench/run.py --models bench/models
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import cpu_seconds  # noqa: E402
from bench.profiling import summarize_profile  # noqa: E402
from bench.report import write_plot, write_section  # noqa: E402

Point = dict[str, object]

WORKLOADS: dict[str, dict[str, object]] = {
    "tabular": {
        "inputs": "tabular_inputs.npz",
        "modes": {"on": ("tabular", "predict"), "off": ("tabular_nobatch", "predict"), "batch64": ("tabular", "batch")},
        "concurrency": {"on": [1, 4, 16, 64], "off": [1, 4, 16, 64], "batch64": [1, 4, 16]},
        "warmup": 1.0, "duration": 3.0,
    },
    "text": {
        "inputs": "text_inputs.npz",
        "modes": {"on": ("text", "predict"), "off": ("text_nobatch", "predict"), "batch64": ("text", "batch")},
        "concurrency": {"on": [1, 16, 64], "off": [1, 16, 64], "batch64": [1, 2]},
        "warmup": 3.0, "duration": 8.0,
    },
}


def ceiling(model_path: Path, inputs: dict[str, np.ndarray], threads: int, seconds: float) -> dict[int, float]:
    """Rows/s of `session.run` alone at batch 1, 8, 32 and 64, with the server's thread settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    result = {}
    for batch in (1, 8, 32, 64):
        feed = {k: v[:batch] for k, v in inputs.items()}
        session.run(None, feed)
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            session.run(None, feed)
            runs += 1
        result[batch] = runs * batch / (time.perf_counter() - started)
    return result


SERVER_CPUS: set[int] = set()
"""With `--pin`: the CPUs every server process is confined to (the benchmark and its other processes get the rest)."""


def pin(pid: int) -> None:
    """Confine every thread of `pid` to SERVER_CPUS (threads it starts later inherit it)."""
    if SERVER_CPUS:
        for thread in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(thread), SERVER_CPUS)


def pin_servers(parser: argparse.ArgumentParser) -> None:
    """`--pin`: servers on the first CPU, this process and what it starts (load generators, sinks, databases) on the
    others."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        parser.error("--pin needs at least 2 CPUs")
    SERVER_CPUS.add(cpus[0])
    os.sched_setaffinity(0, set(cpus[1:]))  # the processes this one starts inherit it


class Server:
    """`python -m vigil.server` (or the floor server) in its own process, on a free loopback port."""

    def __init__(self, models: Path, *, floor: bool = False, script: str = "", env: dict[str, str] | None = None,
                 pinned: bool = True) -> None:
        """`pinned`: on SERVER_CPUS under `--pin` (a server under test, not a stand-in for another machine)."""
        env = {**os.environ, "VIGIL_MODELS_DIR": str(models), "VIGIL_GRPC_PORT": "0", "VIGIL_HTTP_PORT": "0",
               "VIGIL_HOST": "127.0.0.1", "VIGIL_LOG_LEVEL": "WARNING", **(env or {})}
        script = script or ("floor_server.py" if floor else "")
        command = [sys.executable, str(ROOT / "bench" / script)] if script else [sys.executable, "-m", "vigil.server"]
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = re.search(r"gRPC listening on [\d.]+:(\d+)", line)
            if match:
                self.target = f"127.0.0.1:{match.group(1)}"
                break
        else:
            raise RuntimeError("the server did not start")
        if not script:
            self._wait_until_serving()
        if pinned:
            pin(self.process.pid)

    def _wait_until_serving(self) -> None:
        from vigil.clients import Client

        with Client(self.target, timeout=5) as client:
            for _ in range(600):
                try:
                    if client.health() == "SERVING":
                        return
                except Exception:
                    pass
                time.sleep(0.1)
        raise RuntimeError("the server did not become ready")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        if self.process.stdout:
            self.process.stdout.close()


def load(server: Server, model: str, mode: str, inputs: Path, concurrency: int, warmup: float,
         duration: float, protocol: str = "native", versions: str = "", tree: bool = False) -> Point:
    """`tree`: count the CPU of the server's child processes too (the span exporter process)."""
    command = [sys.executable, str(ROOT / "bench" / "load.py"), "--target", server.target, "--model", model,
               "--inputs", str(inputs), "--mode", mode, "--concurrency", str(concurrency), "--protocol", protocol,
               "--warmup", str(warmup), "--duration", str(duration), "--server-pid", str(server.pid),
               *(["--versions", versions] if versions else []), *(["--server-tree"] if tree else [])]
    out = subprocess.run(command, capture_output=True, text=True, timeout=warmup + duration + 120)
    if out.returncode != 0:
        raise RuntimeError(f"the load generator failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


TELEMETRY_MODES = {
    "off": {"VIGIL_TELEMETRY__ENABLED": "false"},
    "metrics": {"VIGIL_TELEMETRY__TRACING": "false"},
    "metrics + 10% traces": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    "metrics + 100% traces": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.0"},
}
"""Server environments for the telemetry-cost comparison; all but `off` export over OTLP to a sink process."""


def telemetry_cost(models: Path, repeats: int, scale: float) -> list[Point]:
    """Tabular, c=64, batching on, for each telemetry mode in turn; a fresh server process for every run, since
    one process's placement on a small machine moves its throughput by several percent."""
    sink = Server(models, script="otlp_sink.py", pinned=False)
    try:
        export = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sink.target}", "OTEL_METRIC_EXPORT_INTERVAL": "5000"}
        runs: dict[str, list[Point]] = defaultdict(list)
        for repeat in range(repeats):
            for mode, env in TELEMETRY_MODES.items():
                server = Server(models, env={**export, **env} if mode != "off" else env)
                try:
                    point = load(server, "tabular", "predict", models / "tabular_inputs.npz", 64, 1.0 * scale,
                                 4.0 * scale, tree=True)
                finally:
                    server.stop()
                point.update(telemetry=mode)
                runs[mode].append(point)
                print(f"[{repeat + 1}/{repeats}] telemetry {mode}: {point['inferences_per_s']:.0f}/s "
                      f"cpu {point['server_cpu_s_per_1000']:.3f}", flush=True)
    finally:
        sink.stop()
    return [median_point(runs[mode]) for mode in TELEMETRY_MODES]


QUALITY_MODES = {
    "quality off": {"VIGIL_TELEMETRY__TRACING": "false", "VIGIL_QUALITY__ENABLED": "false"},
    "quality on": {"VIGIL_TELEMETRY__TRACING": "false", "VIGIL_QUALITY__DRIFT_INTERVAL_SECONDS": "2"},
}
"""Server environments for the quality-monitoring comparison: metrics on in both; with quality on, every row is
counted, kept for feedback and sampled into the drift window, and drift is checked every 2 s (not 30) so several
checks fall inside each run."""


def quality_cost(models: Path, repeats: int, scale: float) -> list[Point]:
    """The tabular classifier with its reference profile, c=64, batching on, quality monitoring off and on; a
    fresh server per run, modes alternating."""
    return alternate({mode: (models, env, "") for mode, env in QUALITY_MODES.items()}, "tabular_quality", models,
                     repeats, scale)


def alternate(modes: dict[str, tuple[Path, dict[str, str], str]], model: str, models: Path, repeats: int,
              scale: float) -> list[Point]:
    """Each mode — (model repository, server environment, versions the load names) — run `repeats` times in turn,
    a fresh server per run, at c=64 with one-row Predict calls; the median point per mode."""
    runs: dict[str, list[Point]] = defaultdict(list)
    for repeat in range(repeats):
        for mode, (repository, env, versions) in modes.items():
            server = Server(repository, env=env)
            try:
                point = load(server, model, "predict", models / "tabular_inputs.npz", 64, 1.0 * scale, 4.0 * scale,
                             versions=versions)
            finally:
                server.stop()
            point.update(telemetry=mode)
            runs[mode].append(point)
            print(f"[{repeat + 1}/{repeats}] {mode}: {point['inferences_per_s']:.0f}/s "
                  f"cpu {point['server_cpu_s_per_1000']:.3f}", flush=True)
    return [median_point(runs[mode]) for mode in modes]


ROLLOUT_MODES = {
    "no split": ("", ""),
    "clients name versions 90/10": ("", "1=90,2=10"),
    "server splits 90/10 (canary with guard)": (
        "\n[rollout]\nweights = { 1 = 90, 2 = 10 }\nstable = 1\n"
        "[rollout.guard]\nmax_error_ratio_increase = 0.01\nmax_p99_ratio = 3.0\n", ""),
}
"""The rollout-cost comparison, as (config.toml addition, versions the load names): the tabular model served as two
identical versions; all requests to the default version (no split); each request naming version 1 or 2 in a 90/10
proportion (two versions serving, no server-side split); or requests naming no version, split 90/10 at random by
the server, with the guard comparing the versions every second. The last two differ only by the split itself."""


def rollout_cost(models: Path, repeats: int, scale: float) -> list[Point]:
    """Tabular, c=64, batching on, two identical versions, without and with a 90/10 split; a fresh server per run,
    modes alternating. Metrics on, tracing off in both."""
    with tempfile.TemporaryDirectory(prefix="vigil-rollout-bench-") as folder:
        for index, (addition, _) in enumerate(ROLLOUT_MODES.values()):
            repository = Path(folder) / str(index)
            source = (models / "tabular").resolve()
            for version in (1, 2):
                (repository / "tabular" / str(version)).mkdir(parents=True)
                (repository / "tabular" / str(version) / "model.onnx").symlink_to(source / "1" / "model.onnx")
            config = (source / "config.toml").read_text() if (source / "config.toml").exists() else ""
            (repository / "tabular" / "config.toml").write_text(config + addition)
        plan = {mode: (Path(folder) / str(index), {"VIGIL_TELEMETRY__TRACING": "false"}, versions)
                for index, (mode, (_, versions)) in enumerate(ROLLOUT_MODES.items())}
        return alternate(plan, "tabular", models, repeats, scale)


def subscriber_cost(models: Path, repeats: int, scale: float, count: int = 200) -> list[Point]:
    """Tabular, c=64, batching on, a fresh Vigil per run: with no Telemetry subscribers, with `count` at 100 ms
    reading Vigil's stream, and with `count` reading the floor server's canned stream instead while Vigil serves
    the same load. The last is what the streams cost this machine outside Vigil's process (the subscribers' own
    process and a bare gRPC server's sending), which a dashboard on another machine would not cost.
    Each point also reports the frames each subscriber received per second (10 is every frame)."""
    runs: dict[str, list[Point]] = defaultdict(list)
    floor = Server(models, floor=True, pinned=False)
    try:
        for repeat in range(repeats):
            for source in ("none", "vigil", "floor"):
                server = Server(models)
                watchers = None
                try:
                    if source != "none":
                        watchers = Subscribers(server.target if source == "vigil" else floor.target, count)
                    point = load(server, "tabular", "predict", models / "tabular_inputs.npz", 64, 1.0 * scale,
                                 4.0 * scale, tree=True)
                    if watchers is not None:
                        point.update(watchers.stop())
                finally:
                    if watchers is not None:
                        watchers.kill()
                    server.stop()
                label = {"none": "none", "vigil": f"{count} on Vigil",
                         "floor": f"{count} on the floor server"}[source]
                point.update(subscribers=0 if source == "none" else count, source=source, telemetry=label)
                runs[label].append(point)
                print(f"[{repeat + 1}/{repeats}] subscribers {label}: {point['inferences_per_s']:.0f}/s "
                      f"cpu {point['server_cpu_s_per_1000']:.3f}", flush=True)
    finally:
        floor.stop()
    return [median_point(r) for r in runs.values()]


def frame_cost(models: Path, count: int = 200, seconds: float = 8.0) -> list[Point]:
    """With no other load: the CPU each frame sent to `count` subscribers at 100 ms costs the floor server and
    Vigil, and the subscribers' process, per frame received."""
    points = []
    for source in ("floor", "vigil"):
        server = Server(models, floor=source == "floor")
        try:
            watchers = Subscribers(server.target, count)
            try:
                time.sleep(2.0)
                server_before, watchers_before = cpu_seconds(server.pid), cpu_seconds(watchers.pid)
                started = time.monotonic()
                time.sleep(seconds)
                server_cpu, watchers_cpu = cpu_seconds(server.pid) - server_before, \
                    cpu_seconds(watchers.pid) - watchers_before
                elapsed = time.monotonic() - started
                received = watchers.stop()
            finally:
                watchers.kill()
        finally:
            server.stop()
        frames = received["frames_per_subscriber_per_s"] * count * elapsed
        points.append({"source": source, "server_us_per_frame": server_cpu / frames * 1e6,
                       "subscribers_us_per_frame": watchers_cpu / frames * 1e6, **received})
        print(f"frame cost {source}: server {server_cpu / frames * 1e6:.0f} us, subscribers "
              f"{watchers_cpu / frames * 1e6:.0f} us per frame", flush=True)
    return points


class Subscribers:
    """`bench/subscribers.py` in its own process: `count` Telemetry streams at 100 ms."""

    def __init__(self, target: str, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "subscribers.py"), "--target", target, "--count", str(count),
             "--interval-ms", "100"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "subscribed"
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> Point:
        """End the streams; what they received: frames per subscriber per second (median), bytes per frame."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        received = json.loads(out.strip().splitlines()[-1])
        frames = received["frames"]
        return {"frames_per_subscriber_per_s": statistics.median(frames) / (time.monotonic() - self.started),
                "subscribers_with_frames": sum(1 for f in frames if f),
                "bytes_per_frame": received["bytes"] / max(sum(frames), 1)}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def median_point(runs: list[Point]) -> Point:
    merged: Point = dict(runs[0])
    for key in ("inferences_per_s", "p50_ms", "p95_ms", "p99_ms", "server_cpu_s_per_1000"):
        merged[key] = statistics.median(float(r[key]) for r in runs)  # type: ignore[arg-type]
    merged["repeats"] = len(runs)
    # Every run's throughput in run order, so that modes run in turn can be compared run by run.
    merged["rates"] = [float(r["inferences_per_s"]) for r in runs]  # type: ignore[arg-type]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=ROOT / "bench" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--protocols", nargs="+", default=["native", "oip"], choices=["native", "oip"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="short windows, one repeat (a smoke run)")
    parser.add_argument("--profile", action="store_true", help="py-spy the server at tabular, c=64, batching on")
    parser.add_argument("--telemetry-cost", action="store_true",
                        help="tabular, c=64, with telemetry off, metrics only, and 10%% and 100%% trace sampling")
    parser.add_argument("--cost-repeats", type=int, default=6,
                        help="runs per telemetry mode, each against a fresh server (medians are reported)")
    parser.add_argument("--quality-cost", action="store_true",
                        help="tabular classifier, c=64, with quality monitoring off and on")
    parser.add_argument("--rollout-cost", action="store_true",
                        help="tabular, c=64, two identical versions without and with a 90/10 canary split")
    parser.add_argument("--only-costs", action="store_true",
                        help="skip the throughput grid and ceilings; run only the cost comparisons asked for")
    parser.add_argument("--pin", action="store_true",
                        help="servers on CPU 0, everything else (load generator, subscribers, OTLP sink) on the "
                             "others: each server's own cost, as if its clients ran on other machines")
    args = parser.parse_args()
    if args.pin:
        pin_servers(parser)
    info = json.loads((args.models / "models.json").read_text())
    threads = int(info["threads"])
    scale = 0.3 if args.quick else 1.0
    repeats = 1 if args.quick else args.repeats

    if args.only_costs:  # add the comparisons to the last full run's results
        results = json.loads((args.out / "benchmark_results.json").read_text())
        run_costs(args, results, scale)
        write_outputs(args.out, results)
        return
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "models": info, "ceiling": {}, "points": [],
    }
    for workload in args.workloads:
        spec = WORKLOADS[workload]
        arrays = dict(np.load(args.models / str(spec["inputs"])))
        model_file = args.models / workload / "1" / "model.onnx"
        results["ceiling"][workload] = ceiling(model_file, arrays, threads, 2.0 * scale)  # type: ignore[index]
        print(f"{workload} ceiling rows/s:", {k: round(v) for k, v in results["ceiling"][workload].items()},  # type: ignore[index]
              flush=True)

    server = Server(args.models)
    try:
        runs: dict[tuple[str, ...], list[Point]] = defaultdict(list)
        plan = [(w, p, m, c) for w in args.workloads for p in args.protocols
                for m in WORKLOADS[w]["modes"] for c in WORKLOADS[w]["concurrency"][m]  # type: ignore[index]
                if not (p == "oip" and m == "batch64")]  # the protocol has no BatchPredict
        for repeat in range(repeats):
            for workload, protocol, mode, concurrency in plan:
                spec = WORKLOADS[workload]
                model, call = spec["modes"][mode]  # type: ignore[index]
                point = load(server, model, call, args.models / str(spec["inputs"]), concurrency,
                             float(spec["warmup"]) * scale, float(spec["duration"]) * scale, protocol)
                point.update(workload=workload, batching=mode)
                runs[(workload, protocol, mode, str(concurrency))].append(point)
                print(f"[{repeat + 1}/{repeats}] {workload} {protocol} {mode} c={concurrency}: "
                      f"{point['inferences_per_s']:.0f}/s p50 {point['p50_ms']:.2f} ms "
                      f"p99 {point['p99_ms']:.2f} ms cpu {point['server_cpu_s_per_1000']:.3f}", flush=True)
        results["points"] = [median_point(r) for r in runs.values()]
        if args.profile and "tabular" in args.workloads:
            results["profile"] = summarize_profile(server.pid, lambda: load(
                server, "tabular", "predict", args.models / "tabular_inputs.npz", 64, 1.0, 6.0))
    finally:
        server.stop()

    if "tabular" in args.workloads:
        floor = Server(args.models, floor=True)
        try:
            floor_runs = {c: [load(floor, "tabular", "predict", args.models / "tabular_inputs.npz", c,
                                   1.0 * scale, 3.0 * scale) for _ in range(repeats)] for c in (64, 1)}
        finally:
            floor.stop()
        results["floor"] = median_point(floor_runs[64])
        results["floor_c1"] = median_point(floor_runs[1])
        print(f"floor (bare grpc.aio, canned answer) c=64: {results['floor']['inferences_per_s']:.0f}/s "
              f"cpu {results['floor']['server_cpu_s_per_1000']:.3f}; c=1 p50 {results['floor_c1']['p50_ms']:.3f} ms",
              flush=True)

    run_costs(args, results, scale)
    write_outputs(args.out, results)


def run_costs(args: argparse.Namespace, results: dict[str, object], scale: float) -> None:
    repeats = 1 if args.quick else args.cost_repeats
    results["costs_pinned"] = args.pin
    if args.telemetry_cost:
        results["telemetry_cost"] = telemetry_cost(args.models, repeats, scale)
        results["subscriber_cost"] = subscriber_cost(args.models, repeats, scale)
        results["frame_cost"] = frame_cost(args.models)
    if args.quality_cost:
        results["quality_cost"] = quality_cost(args.models, repeats, scale)
    if args.rollout_cost:
        results["rollout_cost"] = rollout_cost(args.models, repeats, scale)


def write_outputs(out: Path, results: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark_results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_plot(results, out / "benchmark.png")
    write_section(results, out / "benchmarks.md")
    print(f"wrote {out / 'benchmark_results.json'}, {out / 'benchmark.png'}, {out / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
