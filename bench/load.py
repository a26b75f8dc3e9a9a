"""Closed-loop load generator: C calls in flight against one server, warm-up, then a timed window.

Run as its own process (the benchmark does), so the client's CPU is not the server's. Requests are serialized
once up front and sent as raw bytes, and responses are counted, not decoded, to keep the client cheap.
Prints one JSON line: inferences/s, latency percentiles, and the server's CPU-seconds per 1000 inferences.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.protocols import build_calls  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and every process below it (a supervisor and its workers), all of them alive."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += tree_cpu_seconds(int(child))
    return total


async def run(args: argparse.Namespace) -> dict[str, object]:
    inputs = np.load(args.inputs)
    # Channels to one address share one connection unless each has its own subchannel pool; separate connections
    # are what spreads calls over the worker processes of one port.
    own = [("grpc.use_local_subchannel_pool", 1)] if args.own_connections else []
    channels = [grpc.aio.insecure_channel(args.target, options=[("grpc.max_receive_message_length", 256 << 20),
                                                                ("grpc.max_send_message_length", 256 << 20), *own])
                for _ in range(args.channels)]
    server_cpu = tree_cpu_seconds if args.server_tree else cpu_seconds
    versions = ({int(v): float(w) for v, w in (p.split("=") for p in args.versions.split(","))}
                if args.versions else None)
    calls = [build_calls(ch, args.protocol, args.mode, args.model, inputs, args.rows_per_call, versions)
             for ch in channels]
    await calls[0].check()  # one decoded, verified answer before the load starts
    latencies: list[float] = []
    counting = False
    stop_at = 0.0
    completed = 0

    async def worker(index: int) -> None:
        nonlocal completed
        call = calls[index % len(calls)]
        i = index
        # --rate: each caller waits for its turn, so the C callers together send at most that many calls a second
        spacing = args.concurrency / args.rate if args.rate else 0.0
        turn = time.perf_counter() + spacing * index / args.concurrency
        while time.perf_counter() < stop_at:
            if spacing:
                turn += spacing
                await asyncio.sleep(max(turn - time.perf_counter(), 0.0))
            started = time.perf_counter()
            await call.send(i)
            if counting:
                latencies.append(time.perf_counter() - started)
                completed += 1
            i += args.concurrency

    stop_at = time.perf_counter() + args.warmup + args.duration + 60
    tasks = [asyncio.create_task(worker(i)) for i in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    counting = True
    window_start = time.perf_counter()
    cpu_start = server_cpu(args.server_pid) if args.server_pid else 0.0
    client_start = time.process_time()
    await asyncio.sleep(args.duration)
    counting = False
    window = time.perf_counter() - window_start
    cpu = (server_cpu(args.server_pid) - cpu_start) if args.server_pid else float("nan")
    client_cpu = time.process_time() - client_start
    stop_at = 0.0
    await asyncio.gather(*tasks)
    for ch in channels:
        await ch.close()
    inferences = completed * calls[0].rows_per_call
    lat = np.array(latencies) * 1000
    return {
        "protocol": args.protocol, "mode": args.mode, "model": args.model, "concurrency": args.concurrency,
        "calls": completed, "inferences": inferences, "seconds": round(window, 3),
        "inferences_per_s": inferences / window,
        "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
        "p99_ms": float(np.percentile(lat, 99)),
        "server_cpu_s_per_1000": cpu / inferences * 1000 if inferences else float("nan"),
        "client_cpu_s_per_1000": client_cpu / inferences * 1000 if inferences else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--inputs", type=Path, required=True, help=".npz of the model's inputs, one row each")
    parser.add_argument("--protocol", choices=["native", "oip"], default="native")
    parser.add_argument("--mode", choices=["predict", "batch"], default="predict",
                        help="predict: one row per call; batch: BatchPredict with --rows-per-call items of one row")
    parser.add_argument("--rows-per-call", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="calls a second at most, spread over the callers (default: as fast as answered)")
    parser.add_argument("--server-tree", action="store_true",
                        help="count the CPU of every process below --server-pid too (its workers)")
    parser.add_argument("--own-connections", action="store_true",
                        help="a connection per channel (by default gRPC shares one among channels to one address)")
    parser.add_argument("--versions", default="",
                        help="native only: each request names a version, e.g. 1=90,2=10 (default: none named)")
    result = asyncio.run(run(parser.parse_args()))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
