"""Does the grpcio version change what a unary call costs? A bare `grpc.aio` server that answers one method with
fixed bytes (no protobuf, no Vigil code) and an asyncio client at c=64 over 4 channels, both run under each grpcio
version in its own virtualenv, the versions taking turns, a fresh server per run. Reported per version: calls/s
(median of the runs) and the server's CPU per 1000 calls. grpc/grpc issues 43091/43092 report slower `grpc.aio`
unary calls from 1.75.1 on; this measures the versions on this machine.

Run: python -m bench.grpc_versions [--versions 1.74.0 1.85.3] [--repeats 5] [--pin]
(virtualenvs are made under --cache, `pip install grpcio==VERSION`, on first use)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SERVER = r'''
import asyncio, sys, grpc
ANSWER = bytes(120)
async def predict(request, context):
    return ANSWER
async def main():
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("bench.Floor", {
        "Predict": grpc.unary_unary_rpc_method_handler(predict)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
asyncio.run(main())
'''

CLIENT = r'''
import asyncio, sys, time, json, grpc
target, seconds = sys.argv[1], float(sys.argv[2])
REQUEST = bytes(200)
async def main():
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(4)]
    calls = [ch.unary_unary("/bench.Floor/Predict") for ch in channels]
    done = 0
    stop = 0.0
    async def worker(i):
        nonlocal done
        call = calls[i % len(calls)]
        while time.monotonic() < stop:
            await call(REQUEST)
            done += 1
    warm = time.monotonic() + 1.0
    stop = warm + seconds
    tasks = [asyncio.create_task(worker(i)) for i in range(64)]
    while time.monotonic() < warm:
        await asyncio.sleep(0.01)
    counted, started = done, time.monotonic()
    with open(f"/proc/{sys.argv[3]}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu0 = (int(fields[11]) + int(fields[12])) / 100
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    with open(f"/proc/{sys.argv[3]}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu1 = (int(fields[11]) + int(fields[12])) / 100
    n = done - counted
    print(json.dumps({"calls_per_s": n / elapsed, "server_cpu_s_per_1000": (cpu1 - cpu0) / n * 1000}))
    for ch in channels:
        await ch.close()
asyncio.run(main())
'''


def venv(cache: Path, version: str) -> Path:
    python = cache / f"grpcio-{version}" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"grpcio=={version}"], check=True)
    return python


def run(python: Path, seconds: float, pin: bool) -> dict[str, float]:
    server = subprocess.Popen([str(python), "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        if pin:
            os.sched_setaffinity(server.pid, {0})
        client = subprocess.run([str(python), "-c", CLIENT, f"127.0.0.1:{port}", str(seconds), str(server.pid)],
                                capture_output=True, text=True, check=True, timeout=seconds + 60)
        result: dict[str, float] = json.loads(client.stdout)
        return result
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", nargs="+", default=["1.74.0", "1.85.3"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "vigil-bench-grpc")
    parser.add_argument("--pin", action="store_true", help="the server on CPU 0, the client on the others")
    args = parser.parse_args()
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(cpus[1:]))
    pythons = {v: venv(args.cache, v) for v in args.versions}
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in args.versions}
    for repeat in range(args.repeats):
        for version, python in pythons.items():
            point = run(python, args.seconds, args.pin)
            runs[version].append(point)
            print(f"[{repeat + 1}/{args.repeats}] grpcio {version}: {point['calls_per_s']:.0f} calls/s, "
                  f"{point['server_cpu_s_per_1000']:.3f} s CPU per 1000", flush=True)
        time.sleep(0.5)
    first = args.versions[0]
    base = statistics.median(p["calls_per_s"] for p in runs[first])
    for version, points in runs.items():
        rate = statistics.median(p["calls_per_s"] for p in points)
        cpu = statistics.median(p["server_cpu_s_per_1000"] for p in points)
        print(f"grpcio {version}: {rate:.0f} calls/s median ({rate / base:.3f} of {first}), "
              f"runs {[round(p['calls_per_s']) for p in points]}, server CPU {cpu:.3f} s per 1000")


if __name__ == "__main__":
    sys.exit(main())
