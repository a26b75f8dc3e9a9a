"""The prediction log's costs, on each real backend (a SQLite file; PostgreSQL on a private local cluster):

1. logging: the tabular classifier at c=64, one-row Predict, a fresh server per run, backends in turn, against the
   `memory` store in the same run (every prediction is logged in all three);
2. feedback: BatchFeedback calls of 1,000 labels each, against predictions already in the log, labels joined per
   second through the gRPC API;
3. refresh: the figures a version's refresh computes (hour, day, week, per day, count window) over a log of
   1,000,000 predictions spread over a week, a third of them labelled, in milliseconds per refresh.

Run: python -m bench.store --models bench/models [--repeats 6] [--pin] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import Server, alternate, pin_servers
from tests.postgres import PostgresCluster
from vigil.clients import Client
from vigil.server.store.aggregates import FigureRequest
from vigil.server.store.base import Store
from vigil.server.store.opening import open_store
from vigil.server.store.records import FeedbackItem
from vigil.telemetry.quality.outcomes import LoggedPrediction

MODEL, VERSION, LABELS = "tabular_quality", "1", ("malignant", "benign")


def predictions(count: int, start: int, now: float, span: float, rng: np.random.Generator) -> list[LoggedPrediction]:
    at = now - rng.random(count) * span
    predicted = rng.integers(0, 2, count)
    top = (0.5 + rng.random(count) / 2).astype(np.float32)
    out = []
    for i in range(count):
        p = np.array([[1 - top[i], top[i]] if predicted[i] else [top[i], 1 - top[i]]], np.float32)
        out.append(LoggedPrediction(f"bench-{start + i:012d}", float(at[i]), MODEL, VERSION, False,
                                    np.array([predicted[i]]), top[i:i + 1], p))
    return out


def fill(store: Store, count: int, labelled_share: float, span: float) -> list[str]:
    """`count` predictions over the last `span` seconds, a share of them labelled; their ids."""
    rng = np.random.default_rng(7)
    store.register(MODEL, VERSION, LABELS)
    now = time.time()
    ids = []
    for start in range(0, count, 10_000):
        batch = predictions(min(10_000, count - start), start, now, span, rng)
        store.write(batch)
        ids.extend(p.request_id for p in batch)
        labelled = [FeedbackItem(p.request_id, (LABELS[int(rng.integers(0, 2))],)) for p in batch
                    if rng.random() < labelled_share]
        for part in range(0, len(labelled), 2000):
            store.feedback(labelled[part:part + 2000])
    return ids


def refresh_ms(store: Store, runs: int = 20) -> list[float]:
    request = FigureRequest(MODEL, VERSION, LABELS, 1000, 3600, store.retention_seconds)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        store.figures(request)
        times.append((time.perf_counter() - started) * 1000)
    return times


def feedback_rate(models: Path, url: str, items: int = 50_000) -> float:
    """Labels joined per second by BatchFeedback calls of 1,000 through a server on `url`."""
    store = open_store(url, retention_days=30)
    ids = fill(store, items, 0.0, 3600)
    store.close()
    server = Server(models, env={"VIGIL_STORE__URL": url, "VIGIL_TELEMETRY__TRACING": "false"})
    try:
        with Client(server.target, timeout=120) as client:
            started = time.perf_counter()
            for start in range(0, items, 1000):
                results = client.batch_feedback([(i, "benign") for i in ids[start:start + 1000]])
                failed = [r for r in results if isinstance(r, Exception)]
                if failed:
                    raise RuntimeError(f"feedback failed: {failed[0]}")
            return items / (time.perf_counter() - started)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("bench/models"))
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions in the log the refresh reads")
    parser.add_argument("--scale", type=float, default=1.0, help="load windows: 1 s warm-up and 4 s, times this")
    parser.add_argument("--parts", nargs="+", default=["logging", "feedback", "refresh"],
                        choices=["logging", "feedback", "refresh"])
    parser.add_argument("--pin", action="store_true",
                        help="servers on CPU 0; the load generator and PostgreSQL on the others, as if on other "
                             "machines (a SQLite store's work stays in the server's process, on its CPU)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.pin:
        pin_servers(parser)  # the load generator and PostgreSQL run on the other CPUs
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-store-bench-") as folder, PostgresCluster() as postgres:
        postgres.start()
        urls = {"memory": "memory", "sqlite": f"sqlite:///{folder}/load.db",
                "postgresql": postgres.create_database("load")}
        parts = set(args.parts)
        modes = {name: (args.models, {"VIGIL_STORE__URL": url, "VIGIL_TELEMETRY__TRACING": "false"}, "")
                 for name, url in urls.items()}
        points = alternate(modes, MODEL, args.models, args.repeats, args.scale) if "logging" in parts else []
        results["logging"] = points
        for point in points:
            memory = points[0]["inferences_per_s"]
            print(f"logging, {point['telemetry']}: {point['inferences_per_s']:.0f}/s median "
                  f"({point['inferences_per_s'] / memory:.3f} of memory), runs {[round(r) for r in point['rates']]}, "
                  f"cpu {point['server_cpu_s_per_1000']:.3f} s per 1000", flush=True)
        for name, url in (("sqlite", f"sqlite:///{folder}/feedback.db"),
                          ("postgresql", postgres.create_database("feedback"))) if "feedback" in parts else ():
            rate = feedback_rate(args.models, url)
            results[f"feedback_{name}"] = rate
            print(f"BatchFeedback, {name}: {rate:.0f} labels/s", flush=True)
        for name, url in (("sqlite", f"sqlite:///{folder}/refresh.db"),
                          ("postgresql", postgres.create_database("refresh"))) if "refresh" in parts else ():
            store = open_store(url, retention_days=30)
            started = time.perf_counter()
            fill(store, args.rows, 1 / 3, 7 * 86_400)
            filled = time.perf_counter() - started
            times = refresh_ms(store)
            store.close()
            results[f"refresh_{name}_ms"] = times
            print(f"refresh, {name}, {args.rows:,} predictions ({filled:.0f} s to log and label): median "
                  f"{statistics.median(times):.1f} ms, max {max(times):.1f} ms", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
