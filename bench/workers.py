"""Workers per host: `vigil serve --workers 2` against `--workers 1`, measured in the same run on this machine.

The tabular classifier, batching on, c=64 one-row Predict calls spread over 16 channels, each with its own
connection (the kernel hands each connection to one worker, so one connection would reach one worker only). Each run
gets a fresh server, the two settings take turns, and the medians are reported. Server CPU covers every server
process (the supervisor, its workers and multiprocessing's resource tracker) per 1000 inferences, and so does the
load generator's own CPU. The two share this machine's cores: on a machine where clients are elsewhere, the
workers get the cores the load generator takes here.

As fast as answered (the default) compares throughput. With `--rate` both settings do the same work, and the CPU
comparison shows what splitting it over more processes costs. With `--rate-per-worker` each process does the same
work, and the comparison shows what the worker machinery itself costs.

Run: python -m bench.workers --models bench/models [--repeats 5] [--scale 1] [--rate R | --rate-per-worker R]
     [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.run import ROOT, Server

Point = dict[str, Any]

CONCURRENCY = 64
CHANNELS = 16


def load(server: Server, models: Path, warmup: float, duration: float, rate: float = 0.0) -> Point:
    command = [sys.executable, str(ROOT / "bench" / "load.py"), "--target", server.target, "--model", "tabular",
               "--inputs", str(models / "tabular_inputs.npz"), "--mode", "predict", "--concurrency",
               str(CONCURRENCY), "--channels", str(CHANNELS), "--own-connections", "--warmup", str(warmup),
               "--duration", str(duration), "--server-pid", str(server.pid), "--server-tree",
               *(["--rate", str(rate)] if rate else [])]
    out = subprocess.run(command, capture_output=True, text=True, timeout=warmup + duration + 120)
    if out.returncode != 0:
        raise RuntimeError(f"the load generator failed: {out.stderr.strip()[-2000:]}")
    point: Point = json.loads(out.stdout.strip().splitlines()[-1])
    return point


def median(runs: list[Point], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=ROOT / "bench" / "models")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="load windows: 1 s warm-up and 4 s, times this")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, default=0.0,
                      help="calls a second at most (default: as fast as answered, the throughput comparison); "
                           "at a rate both settings sustain, the CPU comparison is of equal work for the host")
    pace.add_argument("--rate-per-worker", type=float, default=0.0,
                      help="calls a second at most for each worker (N workers get N times as many): the CPU "
                           "comparison is of equal work for each process")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs: dict[int, list[Point]] = {n: [] for n in args.workers}
    with tempfile.TemporaryDirectory(prefix="vigil-workers-bench-") as folder:
        for repeat in range(args.repeats):
            for workers in args.workers:
                env = {"VIGIL_WORKERS": str(workers), "VIGIL_TELEMETRY__TRACING": "false",
                       "VIGIL_STORE__URL": f"sqlite:///{folder}/store-{repeat}-{workers}.db"}
                server = Server(args.models, env=env)
                try:
                    rate = args.rate or args.rate_per_worker * workers
                    point = load(server, args.models, 1.0 * args.scale, 4.0 * args.scale, rate)
                finally:
                    server.stop()
                runs[workers].append(point)
                print(f"[{repeat + 1}/{args.repeats}] workers {workers}: {point['inferences_per_s']:.0f}/s, "
                      f"p99 {point['p99_ms']:.1f} ms, server cpu {point['server_cpu_s_per_1000']:.3f} s per 1000, "
                      f"load generator cpu {point['client_cpu_s_per_1000']:.3f}", flush=True)
    summary: dict[str, Any] = {"cpus": len(os.sched_getaffinity(0)), "concurrency": CONCURRENCY,
                               "channels": CHANNELS, "rate": args.rate, "rate_per_worker": args.rate_per_worker,
                               "points": {}}
    for workers, points in runs.items():
        summary["points"][str(workers)] = {
            "inferences_per_s": median(points, "inferences_per_s"), "p50_ms": median(points, "p50_ms"),
            "p99_ms": median(points, "p99_ms"), "server_cpu_s_per_1000": median(points, "server_cpu_s_per_1000"),
            "client_cpu_s_per_1000": median(points, "client_cpu_s_per_1000"),
            "rates": [float(p["inferences_per_s"]) for p in points]}
    # Ratios to the first setting run by run (runs next to each other share this machine's background load) and
    # their median: steadier than the ratio of the medians on a machine other work also uses.
    base_runs = runs[args.workers[0]]
    for workers in args.workers:
        point = summary["points"][str(workers)]
        pairs = list(zip(runs[workers], base_runs, strict=True))
        point["throughput_ratios"] = [p["inferences_per_s"] / b["inferences_per_s"] for p, b in pairs]
        point["server_cpu_ratios"] = [p["server_cpu_s_per_1000"] / b["server_cpu_s_per_1000"] for p, b in pairs]
        point["throughput_ratio"] = statistics.median(point["throughput_ratios"])
        point["server_cpu_ratio"] = statistics.median(point["server_cpu_ratios"])
        print(f"workers {workers}: {point['inferences_per_s']:.0f}/s median ({point['throughput_ratio']:.2f}x run by "
              f"run), p50 {point['p50_ms']:.2f} ms, p99 {point['p99_ms']:.2f} ms, server cpu "
              f"{point['server_cpu_s_per_1000']:.3f} s per 1000 ({point['server_cpu_ratio']:.2f}x run by run), "
              f"load generator cpu {point['client_cpu_s_per_1000']:.3f} s per 1000", flush=True)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
