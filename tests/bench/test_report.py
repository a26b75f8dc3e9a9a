"""The benchmark report: targets are judged from the measured points, and the results section is replaced in place."""

from __future__ import annotations

from pathlib import Path

from bench.report import END, START, targets, write_section


def point(workload: str, mode: str, concurrency: int, rate: float, p50: float = 1.0, cpu: float = 0.3) -> dict:
    return {"workload": workload, "protocol": "native", "batching": mode, "concurrency": concurrency,
            "inferences_per_s": rate, "p50_ms": p50, "p95_ms": p50 * 2, "p99_ms": p50 * 3,
            "server_cpu_s_per_1000": cpu, "repeats": 2}


RESULTS = {
    "machine": {"cpus": 2, "python": "3.11", "platform": "linux"},
    "models": {"threads": 2, "text": "MiniLM", "tabular": "classifier"},
    "ceiling": {"text": {1: 150.0, 8: 200.0, 32: 190.0, 64: 180.0}, "tabular": {1: 1e5, 64: 6e6}},
    "points": [
        point("text", "on", 16, 195.0), point("text", "on", 64, 180.0),
        point("tabular", "on", 64, 3000.0, cpu=0.24), point("tabular", "off", 64, 1400.0),
        point("tabular", "on", 1, 1000.0, p50=1.2), point("tabular", "off", 1, 1000.0, p50=1.0),
        point("tabular", "batch64", 1, 40_000.0), point("tabular", "batch64", 4, 52_000.0),
    ],
}


def test_targets_are_judged_against_the_best_ceiling_and_the_paired_points() -> None:
    judged = {name: (measured, met) for name, _, measured, met in targets(RESULTS)}
    assert judged["Text encoder, c=16, batching on vs in-process ceiling"][1] is True  # 195 / 200
    assert judged["Text encoder, c=64, batching on vs in-process ceiling"][1] is False  # 180 / 200 = 0.9
    assert judged["Tabular, c=64, batching on / off throughput"] == ("2.14 (3000 vs 1400/s)", True)
    assert judged["Tabular, c=64, batching on: server CPU-s per 1000 inferences"] == ("0.240", True)
    assert judged["Tabular, c=1: p50 batching on minus off"] == ("+0.200 ms (1.200 vs 1.000)", True)
    assert judged["Tabular, BatchPredict 64 rows per call"] == ("52,000 rows/s (c=4)", False)  # under 60,000
    assert judged["Tabular, BatchPredict 64 one-row items: server CPU per item"] == ("300.0 µs", False)


def test_floor_targets_are_ratios_to_the_floor_measured_in_the_same_run() -> None:
    oip = {**point("tabular", "on", 64, 2800.0), "protocol": "oip"}
    results = {**RESULTS, "points": [*RESULTS["points"], oip],
               "floor": point("tabular", "predict", 64, 5000.0, cpu=0.12),
               "floor_c1": point("tabular", "predict", 1, 4000.0, p50=1.0)}
    judged = {name: (measured, met) for name, _, measured, met in targets(results)}
    assert judged["Tabular, c=64, native Predict: server CPU per call vs the floor's"] == (
        "2.00x (0.240 vs 0.120 ms)", False)
    assert judged["Tabular, c=64, native Predict: throughput vs the floor's"] == ("0.60x (3000 vs 5000/s)", True)
    assert judged["Tabular, c=64: Open Inference Protocol ModelInfer vs native Predict"] == (
        "-6.7% (2800 vs 3000/s)", True)
    assert judged["Tabular, c=1: p50 minus the floor's p50"] == ("+0.200 ms (1.200 vs 1.000)", True)


def test_results_section_is_replaced_not_appended(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nHand-written analysis.\n\n{START}\nold numbers\n{END}\n\nMore prose.\n")
    write_section(RESULTS, doc)
    write_section(RESULTS, doc)
    text = doc.read_text()
    assert text.count(START) == 1 and "old numbers" not in text
    assert text.startswith("# Benchmarks\n\nHand-written analysis.") and text.rstrip().endswith("More prose.")
    assert "| native | batching on | 64 | 3,000 |" in text and "**missed**" in text


def section(results: dict, tmp_path: Path) -> str:
    """The results section written for `results` into an otherwise empty document."""
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"{START}\n{END}\n")
    write_section(results, doc)
    return doc.read_text()


def cost_point(label: str, source: str, subscribers: int, rate: float) -> dict:
    return {"telemetry": label, "source": source, "subscribers": subscribers, "inferences_per_s": rate,
            "p99_ms": 100.0, "server_cpu_s_per_1000": 1.0, "repeats": 6,
            **({"frames_per_subscriber_per_s": 9.8} if subscribers else {})}


def test_the_subscriber_target_compares_vigils_stream_with_none_not_the_floor_control(tmp_path: Path) -> None:
    results = {**RESULTS, "costs_pinned": True, "subscriber_cost": [
        cost_point("none", "none", 0, 1000.0), cost_point("200 on Vigil", "vigil", 200, 800.0),
        cost_point("200 on the floor server", "floor", 200, 970.0)],
        "frame_cost": [{"source": "floor", "server_us_per_frame": 75.0, "subscribers_us_per_frame": 70.0,
                        "bytes_per_frame": 1531.0, "frames_per_subscriber_per_s": 9.7},
                       {"source": "vigil", "server_us_per_frame": 95.0, "subscribers_us_per_frame": 74.0,
                        "bytes_per_frame": 1038.0, "frames_per_subscriber_per_s": 9.8}]}
    judged = {name: (measured, met) for name, _, measured, met in targets(results)}
    assert judged["Telemetry stream, tabular c=64: 200 subscribers at 100 ms vs none"] == (
        "20.0% loss (800 vs 1000/s)", False)
    text = section(results, tmp_path)
    assert "| 200 on the floor server | 970 | -3.0% |" in text
    assert "| Vigil | 95 | 74 | 1,038 | 9.8 |" in text
    assert "ran with `--pin`" in text


def test_telemetry_costs_show_run_by_run_changes_against_the_same_turns_baseline(tmp_path: Path) -> None:
    def mode(label: str, rates: list[float]) -> dict:
        return {**cost_point(label, "", 0, sorted(rates)[len(rates) // 2]), "rates": rates}

    # Turn by turn the 10% mode loses 10%, 0%, 5% and 20%: median 7.5%, middle half 3.75% to 12.5%.
    results = {**RESULTS, "telemetry_cost": [
        mode("off", [1000.0, 900.0, 1000.0, 800.0]), mode("metrics + 10% traces", [900.0, 900.0, 950.0, 640.0])]}
    judged = {name: (measured, met) for name, _, measured, met in targets(results)}
    measured, met = judged["Telemetry cost, tabular c=64: metrics + 10% traces vs off"]
    assert measured == "10.0% loss (900 vs 1000/s; run by run 7.5%, middle half 3.8% to 12.5%)" and met is False
    text = section(results, tmp_path)
    assert "| off | 1,000 | +0.0% | 100.00 | 1.000 | – |" in text
    assert "| metrics + 10% traces | 900 | -10.0% | 100.00 | 1.000 | -7.5% (-12.5% to -3.8%) |" in text


def test_costs_without_each_runs_rates_keep_the_plain_table(tmp_path: Path) -> None:
    results = {**RESULTS, "telemetry_cost": [cost_point("off", "", 0, 1000.0),
                                             cost_point("metrics + 10% traces", "", 0, 960.0)]}
    judged = {name: measured for name, _, measured, _ in targets(results)}
    assert judged["Telemetry cost, tabular c=64: metrics + 10% traces vs off"] == "4.0% loss (960 vs 1000/s)"
    assert "| metrics + 10% traces | 960 | -4.0% | 100.00 | 1.000 |\n" in section(results, tmp_path)
