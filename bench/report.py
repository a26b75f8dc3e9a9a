"""Turning benchmark results into the plot and the results section of docs/benchmarks.md."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

START = "<!-- results:start (written by bench/run.py) -->"
END = "<!-- results:end -->"
MODE_NAMES = {"on": "batching on", "off": "batching off (max_batch_size 1)", "batch64": "BatchPredict, 64 rows/call"}


def _points(results: dict[str, Any], workload: str, protocol: str = "native") -> list[dict[str, Any]]:
    return [p for p in results["points"] if p["workload"] == workload and p["protocol"] == protocol]


def _find(results: dict[str, Any], workload: str, mode: str, concurrency: int,
          protocol: str = "native") -> dict[str, Any] | None:
    return next((p for p in _points(results, workload, protocol)
                 if p["batching"] == mode and p["concurrency"] == concurrency), None)


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, required, measured, met) for every target whose points were measured."""
    rows: list[tuple[str, str, str, bool]] = []
    ceiling = results["ceiling"]
    if "text" in ceiling:
        best = max(ceiling["text"].values())
        for c in (16, 64):
            point = _find(results, "text", "on", c)
            if point:
                ratio = point["inferences_per_s"] / best
                rows.append((f"Text encoder, c={c}, batching on vs in-process ceiling", ">= 0.95",
                             f"{ratio:.3f} ({point['inferences_per_s']:.1f} vs {best:.1f} rows/s)", ratio >= 0.95))
    on64, off64 = _find(results, "tabular", "on", 64), _find(results, "tabular", "off", 64)
    if on64 and off64:
        ratio = on64["inferences_per_s"] / off64["inferences_per_s"]
        rows.append(("Tabular, c=64, batching on / off throughput", ">= 2.0",
                     f"{ratio:.2f} ({on64['inferences_per_s']:.0f} vs {off64['inferences_per_s']:.0f}/s)", ratio >= 2))
        cpu = on64["server_cpu_s_per_1000"]
        rows.append(("Tabular, c=64, batching on: server CPU-s per 1000 inferences", "<= 0.25", f"{cpu:.3f}",
                     cpu <= 0.25))
    on1, off1 = _find(results, "tabular", "on", 1), _find(results, "tabular", "off", 1)
    if on1 and off1:
        gap = on1["p50_ms"] - off1["p50_ms"]
        rows.append(("Tabular, c=1: p50 batching on minus off", "<= 0.3 ms",
                     f"{gap:+.3f} ms ({on1['p50_ms']:.3f} vs {off1['p50_ms']:.3f})", gap <= 0.3))
    rows += tracing_costs(results, "off", "Telemetry cost, tabular c=64: {mode} vs off")
    quality = {p["telemetry"]: p["inferences_per_s"] for p in results.get("quality_cost", [])}
    if "quality off" in quality and "quality on" in quality:
        loss = 1 - quality["quality on"] / quality["quality off"]
        rows.append(("Quality monitoring, tabular classifier c=64: on vs off", "<= 5% loss",
                     f"{loss:.1%} loss ({quality['quality on']:.0f} vs {quality['quality off']:.0f}/s)",
                     loss <= 0.05))
    split = {p["telemetry"]: p["inferences_per_s"] for p in results.get("rollout_cost", [])}
    named, routed = "clients name versions 90/10", "server splits 90/10 (canary with guard)"
    if named in split and routed in split:
        loss = 1 - split[routed] / split[named]
        rows.append(("Rollouts, tabular c=64: the server's 90/10 split vs the same traffic with versions named",
                     "<= 3% loss", f"{loss:.1%} loss ({split[routed]:.0f} vs {split[named]:.0f}/s)", loss <= 0.03))
    subscribed = {p.get("source", "vigil" if p["subscribers"] else "none"): p
                  for p in results.get("subscriber_cost", [])}
    if "none" in subscribed and "vigil" in subscribed:
        none, vigil = subscribed["none"], subscribed["vigil"]
        loss = 1 - vigil["inferences_per_s"] / none["inferences_per_s"]
        rows.append((f"Telemetry stream, tabular c=64: {vigil['subscribers']} subscribers at 100 ms vs none",
                     "<= 5% loss", f"{loss:.1%} loss ({vigil['inferences_per_s']:.0f} vs "
                     f"{none['inferences_per_s']:.0f}/s)", loss <= 0.05))
    batch = [p for p in _points(results, "tabular") if p["batching"] == "batch64"]
    if batch:
        best_batch = max(batch, key=lambda p: p["inferences_per_s"])
        rows.append(("Tabular, BatchPredict 64 rows per call", ">= 60,000 rows/s",
                     f"{best_batch['inferences_per_s']:,.0f} rows/s (c={best_batch['concurrency']})",
                     best_batch["inferences_per_s"] >= 60_000))
        per_item = best_batch["server_cpu_s_per_1000"] * 1000
        rows.append(("Tabular, BatchPredict 64 one-row items: server CPU per item", "<= 15 µs",
                     f"{per_item:.1f} µs", per_item <= 15))
    rows += floor_targets(results)
    return rows


def floor_targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """Against the bare gRPC floor server measured in the same run."""
    rows: list[tuple[str, str, str, bool]] = []
    floor, on64 = results.get("floor"), _find(results, "tabular", "on", 64)
    if floor and on64:
        cpu = on64["server_cpu_s_per_1000"] / floor["server_cpu_s_per_1000"]
        rows.append(("Tabular, c=64, native Predict: server CPU per call vs the floor's", "<= 1.5x",
                     f"{cpu:.2f}x ({on64['server_cpu_s_per_1000']:.3f} vs {floor['server_cpu_s_per_1000']:.3f} ms)",
                     cpu <= 1.5))
        rate = on64["inferences_per_s"] / floor["inferences_per_s"]
        rows.append(("Tabular, c=64, native Predict: throughput vs the floor's", ">= 0.6x",
                     f"{rate:.2f}x ({on64['inferences_per_s']:.0f} vs {floor['inferences_per_s']:.0f}/s)",
                     rate >= 0.6))
    oip64 = _find(results, "tabular", "on", 64, "oip")
    if on64 and oip64:
        gap = 1 - oip64["inferences_per_s"] / on64["inferences_per_s"]
        rows.append(("Tabular, c=64: Open Inference Protocol ModelInfer vs native Predict", "within 10%",
                     f"{-gap:+.1%} ({oip64['inferences_per_s']:.0f} vs {on64['inferences_per_s']:.0f}/s)",
                     abs(gap) <= 0.10))
    floor1, on1 = results.get("floor_c1"), _find(results, "tabular", "on", 1)
    if floor1 and on1:
        gap = on1["p50_ms"] - floor1["p50_ms"]
        rows.append(("Tabular, c=1: p50 minus the floor's p50", "<= 0.25 ms",
                     f"{gap:+.3f} ms ({on1['p50_ms']:.3f} vs {floor1['p50_ms']:.3f})", gap <= 0.25))
    rows += tracing_costs(results, "metrics", "Tracing, tabular c=64: {mode} vs metrics only")
    return rows


def tracing_costs(results: dict[str, Any], baseline: str, name: str) -> list[tuple[str, str, str, bool]]:
    """Throughput lost to 10% and 100% trace sampling against the `baseline` telemetry mode (5% and 15% at most)."""
    cost = {p["telemetry"]: p for p in results.get("telemetry_cost", [])}
    if baseline not in cost:
        return []
    rows: list[tuple[str, str, str, bool]] = []
    base_point = cost[baseline]
    for mode, limit in (("metrics + 10% traces", 0.05), ("metrics + 100% traces", 0.15)):
        if mode in cost:
            rate, base = cost[mode]["inferences_per_s"], base_point["inferences_per_s"]
            loss = 1 - rate / base
            measured = f"{loss:.1%} loss ({rate:.0f} vs {base:.0f}/s"
            changes = paired_changes(cost[mode], base_point)
            if len(changes) > 1:
                q1, median, q3 = middle_half(changes)
                measured += f"; run by run {-median:.1%}, middle half {-q3:.1%} to {-q1:.1%}"
            rows.append((name.format(mode=mode), f"<= {limit:.0%} loss", measured + ")", loss <= limit))
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [START, ""]
    machine = results["machine"]
    lines.append(f"Measured on {machine['cpus']} CPUs, Python {machine['python']}, {machine['platform']}; "
                 f"ONNX Runtime with {results['models']['threads']} intra-op threads in the server and the ceiling; "
                 f"medians of {max(p.get('repeats', 1) for p in results['points'])} interleaved repeats.")
    lines += ["", "### Targets", "", "| target | required | measured | |", "|---|---|---|---|"]
    for name, required, measured, met in targets(results):
        lines.append(f"| {name} | {required} | {measured} | {'met' if met else '**missed**'} |")
    if "floor" in results:
        floor = results["floor"]
        lines += ["", f"The floor — a bare `grpc.aio` server answering Predict with a canned response "
                  f"(`bench/floor_server.py`), same load, c=64: {floor['inferences_per_s']:,.0f} calls/s, "
                  f"{floor['server_cpu_s_per_1000']:.3f} server CPU-s per 1000 calls."]
    for workload, ceil in results["ceiling"].items():
        source = results["models"].get(workload, workload)
        lines += ["", f"### {workload}: {source}", "",
                  "In-process ceiling (`session.run` alone): " + ", ".join(
                      f"batch {b}: {v:,.0f} rows/s" for b, v in sorted(ceil.items(), key=lambda kv: int(kv[0]))),
                  ""]
        protocols = sorted({p["protocol"] for p in _points_all(results, workload)})
        lines += ["| protocol | mode | concurrency | inferences/s | p50 ms | p95 ms | p99 ms | server CPU-s / 1000 |",
                  "|---|---|---|---|---|---|---|---|"]
        for protocol in protocols:
            for point in sorted(_points(results, workload, protocol), key=lambda p: (p["batching"], p["concurrency"])):
                lines.append(
                    f"| {protocol} | {MODE_NAMES[point['batching']]} | {point['concurrency']} | "
                    f"{point['inferences_per_s']:,.0f} | {point['p50_ms']:.2f} | {point['p95_ms']:.2f} | "
                    f"{point['p99_ms']:.2f} | {point['server_cpu_s_per_1000']:.3f} |")
        lines.append("")
    if results.get("costs_pinned"):
        lines += ["", "The cost comparisons below ran with `--pin`: each server under test on CPU 0, the load "
                  "generator, subscribers and OTLP sink on the other CPUs."]
    if results.get("telemetry_cost"):
        off = next(p for p in results["telemetry_cost"] if p["telemetry"] == "off")
        lines += ["", "### What telemetry costs (tabular, c=64, batching on)", "",
                  "A fresh server process for every run, modes interleaved, medians of the runs. Every mode but `off` "
                  "exports over OTLP to a sink process (`bench/otlp_sink.py`, which leaves requests unparsed): metrics "
                  "every 5 s, spans in batches.", "",
                  *_cost_table(results["telemetry_cost"], off, "telemetry", "vs off")]
    if results.get("subscriber_cost"):
        none = next(p for p in results["subscriber_cost"] if p["subscribers"] == 0)
        lines += ["", "### What Telemetry subscribers cost (tabular, c=64, batching on)", "",
                  "Subscribers in their own process (`bench/subscribers.py`, reading frames as bytes), a fresh server "
                  "per run, medians of the runs. A subscriber at 100 ms receives 10 frames a second when it keeps up. "
                  "In the last row the subscribers read the floor server's canned stream (`bench/floor_server.py`) "
                  "while Vigil serves the same load: what the streams cost this machine outside Vigil's process.",
                  "", "| subscribers | inferences/s | vs none | p99 ms | server CPU-s / 1000 "
                  "| frames per subscriber per s |",
                  "|---|---|---|---|---|---|"]
        for point in results["subscriber_cost"]:
            change = point["inferences_per_s"] / none["inferences_per_s"] - 1
            frames = point.get("frames_per_subscriber_per_s")
            lines.append(f"| {point.get('telemetry', point['subscribers'])} | {point['inferences_per_s']:,.0f} | "
                         f"{change:+.1%} | {point['p99_ms']:.2f} | {point['server_cpu_s_per_1000']:.3f} | "
                         f"{'–' if frames is None else f'{frames:.1f}'} |")
    if results.get("frame_cost"):
        lines += ["", "CPU per frame with no other load, 200 subscribers at 100 ms:", "",
                  "| server | server CPU µs per frame | subscribers' CPU µs per frame | bytes per frame "
                  "| frames per subscriber per s |", "|---|---|---|---|---|"]
        for point in results["frame_cost"]:
            name = "floor (bare grpc.aio, canned frame)" if point["source"] == "floor" else "Vigil"
            lines.append(f"| {name} | {point['server_us_per_frame']:.0f} | {point['subscribers_us_per_frame']:.0f} "
                         f"| {point['bytes_per_frame']:,.0f} | {point['frames_per_subscriber_per_s']:.1f} |")
    if results.get("quality_cost"):
        off = next(p for p in results["quality_cost"] if p["telemetry"] == "quality off")
        lines += ["", "### What quality monitoring costs (tabular classifier, c=64, batching on)", "",
                  "The bundled classifier with its labels and reference profile; metrics on, tracing off in both "
                  "modes. With quality on, every row is counted by class and confidence, every request's "
                  "prediction is kept for feedback, rows are sampled into the drift window and drift is checked "
                  "every 2 s. A fresh server per run, modes interleaved, medians of the runs.", "",
                  *_cost_table(results["quality_cost"], off, "quality", "vs off")]
    if results.get("rollout_cost"):
        none = next(p for p in results["rollout_cost"] if p["telemetry"] == "no split")
        lines += ["", "### What a rollout split costs (tabular, c=64, batching on)", "",
                  "The tabular model served as two identical versions. `no split`: every request goes to the default "
                  "version. `clients name versions 90/10`: each request names version 1 or 2 in that proportion, so "
                  "both versions serve but the server routes nothing. `server splits 90/10`: requests name no "
                  "version; the server's canary split routes each at random and its guard compares the versions "
                  "every second. The split's own cost is the last against the second; against the first, the cost "
                  "of serving a canary at all (a second batcher, smaller batches on each). Metrics on, tracing off; "
                  "a fresh server per run, modes interleaved, medians of the runs.", "",
                  *_cost_table(results["rollout_cost"], none, "rollout", "vs no split")]
    if "profile" in results:
        profile = results["profile"]
        lines += ["", "### Where the server's time goes (tabular, c=64, batching on)", "",
                  f"py-spy, {profile['samples']} samples of the server process (all threads). Time in C code "
                  "(gRPC's core, ONNX Runtime, the kernel) shows under the Python frame that called it.", "",
                  "Functions holding the most samples themselves:", "", "| share | function |", "|---|---|"]
        lines += [f"| {share:.1f}% | `{name}` |" for name, share in profile["self"]]
        lines += ["", "Vigil's own functions, with everything they call:", "", "| share | function |", "|---|---|"]
        lines += [f"| {share:.1f}% | `{name}` |" for name, share in profile["project"]]
    lines += ["", "![throughput and p99 against concurrency](benchmark.png)", "", END]
    return "\n".join(lines)


def paired_changes(point: dict[str, Any], baseline: dict[str, Any]) -> list[float]:
    """Each run's throughput against the baseline's run of the same turn (modes run in turn), or none when the
    runs were not kept."""
    rates, base = point.get("rates"), baseline.get("rates")
    if not rates or not base or len(rates) != len(base):
        return []
    return [rate / against - 1 for rate, against in zip(rates, base, strict=True)]


def middle_half(values: list[float]) -> tuple[float, float, float]:
    """The lower quartile, median and upper quartile."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def _cost_table(points: list[dict[str, Any]], baseline: dict[str, Any], kind: str, against: str) -> list[str]:
    """A cost comparison as markdown table lines: each mode's median throughput against the baseline's, and the
    run-by-run changes (each run against the baseline's run of the same turn) as median and middle half."""
    paired = any(len(paired_changes(p, baseline)) > 1 for p in points if p is not baseline)
    extra = (" run by run: median (middle half) |", "---|") if paired else ("", "")
    lines = [f"| {kind} | inferences/s | {against} | p99 ms | server CPU-s / 1000 |{extra[0]}",
             f"|---|---|---|---|---|{extra[1]}"]
    for point in points:
        change = point["inferences_per_s"] / baseline["inferences_per_s"] - 1
        row = (f"| {point['telemetry']} | {point['inferences_per_s']:,.0f} | {change:+.1%} | "
               f"{point['p99_ms']:.2f} | {point['server_cpu_s_per_1000']:.3f} |")
        if paired:
            changes = paired_changes(point, baseline)
            if point is baseline or len(changes) < 2:
                row += " – |"
            else:
                q1, median, q3 = middle_half(changes)
                row += f" {median:+.1%} ({q1:+.1%} to {q3:+.1%}) |"
        lines.append(row)
    return lines


def _points_all(results: dict[str, Any], workload: str) -> list[dict[str, Any]]:
    return [p for p in results["points"] if p["workload"] == workload]


def write_section(results: dict[str, Any], path: Path) -> None:
    """Replace the results section of the document (or append one)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    section = markdown(results)
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def write_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results["ceiling"])
    fig, axes = plt.subplots(2, len(workloads), figsize=(6 * len(workloads), 8), squeeze=False)
    for col, workload in enumerate(workloads):
        for (protocol, mode) in sorted({(p["protocol"], p["batching"]) for p in _points_all(results, workload)}):
            pts = sorted((p for p in _points(results, workload, protocol) if p["batching"] == mode),
                         key=lambda p: p["concurrency"])
            label = f"{MODE_NAMES[mode]} ({protocol})"
            xs = [p["concurrency"] for p in pts]
            axes[0][col].plot(xs, [p["inferences_per_s"] for p in pts], marker="o", label=label)
            axes[1][col].plot(xs, [p["p99_ms"] for p in pts], marker="o", label=label)
        best = max(results["ceiling"][workload].values())
        axes[0][col].axhline(best, color="grey", linestyle="--", label="in-process ceiling")
        axes[0][col].set_title(f"{workload}: throughput")
        axes[0][col].set_ylabel("inferences/s")
        axes[1][col].set_title(f"{workload}: p99 latency")
        axes[1][col].set_ylabel("ms")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xlabel("concurrency (calls in flight)")
            axes[row][col].grid(True, alpha=0.3)
        axes[0][col].set_yscale("log")
        axes[0][col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
