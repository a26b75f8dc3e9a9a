"""Several processes' OpenMetrics pages merged into one: counters and histograms summed, gauges per process, the
newest exemplar per bucket, and the totals of a process that has gone carried forward."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from vigil.telemetry.export.merged_pages import FamiliesCollector, MergedPages, parse_page

PROMTOOL = shutil.which("promtool")


def page(requests: float, in_flight: float, fast: float, slow: float, exemplar_at: float) -> str:
    exemplar = f'{{trace_id="{int(exemplar_at):032x}"}} 0.005 {exemplar_at}'
    return f"""# HELP vigil_requests Calls.
# TYPE vigil_requests counter
vigil_requests_total{{method="Predict",code="OK"}} {requests}
# HELP vigil_requests_in_flight Calls being handled now.
# TYPE vigil_requests_in_flight gauge
vigil_requests_in_flight{{method="Predict"}} {in_flight}
# HELP vigil_request_duration_seconds Time per call.
# TYPE vigil_request_duration_seconds histogram
vigil_request_duration_seconds_bucket{{method="Predict",le="0.01"}} {fast} # {exemplar}
vigil_request_duration_seconds_bucket{{method="Predict",le="+Inf"}} {fast + slow}
vigil_request_duration_seconds_count{{method="Predict"}} {fast + slow}
vigil_request_duration_seconds_sum{{method="Predict"}} {fast * 0.005 + slow * 0.5}
# EOF
"""


def render(families: list, *, openmetrics: bool = False) -> str:  # type: ignore[type-arg]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FamiliesCollector(families))
    return (generate_openmetrics if openmetrics else generate_latest)(registry).decode()


def value(text: str, line_start: str) -> float:
    [line] = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(line.split(" # ")[0].rsplit(" ", 1)[1])


def test_counters_and_histograms_are_summed_and_gauges_kept_per_process() -> None:
    merged = MergedPages(label="worker")
    families = merged.merge({"0": parse_page(page(10, 2, 9, 1, 1000.0)),
                             "1": parse_page(page(27, 3, 20, 7, 2000.0))})
    text = render(families)
    assert value(text, 'vigil_requests_total{code="OK",method="Predict"}') == 37
    assert value(text, 'vigil_request_duration_seconds_count{method="Predict"}') == 37
    assert value(text, 'vigil_request_duration_seconds_bucket{le="0.01",method="Predict"}') == 29
    assert value(text, 'vigil_request_duration_seconds_sum{method="Predict"}') == pytest.approx(29 * 0.005 + 4.0)
    assert value(text, 'vigil_requests_in_flight{method="Predict",worker="0"}') == 2
    assert value(text, 'vigil_requests_in_flight{method="Predict",worker="1"}') == 3
    # the newest exemplar of each bucket, whichever process had it
    openmetrics = render(families, openmetrics=True)
    assert f'trace_id="{2000:032x}"' in openmetrics and f'trace_id="{1000:032x}"' not in openmetrics
    if PROMTOOL is not None:
        checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
        assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


def test_a_retired_process_keeps_its_totals_in_the_sums() -> None:
    merged = MergedPages(label="worker")
    last = parse_page(page(10, 2, 9, 1, 1000.0))
    merged.retire(last)
    # its replacement counts from zero; the host's totals do not drop
    text = render(merged.merge({"0": parse_page(page(3, 1, 3, 0, 3000.0)),
                                "1": parse_page(page(27, 3, 20, 7, 2000.0))}))
    assert value(text, 'vigil_requests_total{code="OK",method="Predict"}') == 40
    assert value(text, 'vigil_request_duration_seconds_count{method="Predict"}') == 40
    assert value(text, 'vigil_requests_in_flight{method="Predict",worker="0"}') == 1  # gauges: only the live one
    # merging leaves the carried totals as they were: a second scrape reads the same
    assert render(merged.merge({"0": parse_page(page(3, 1, 3, 0, 3000.0)),
                                "1": parse_page(page(27, 3, 20, 7, 2000.0))})) == text


def test_a_family_of_another_type_in_one_process_is_left_out() -> None:
    merged = MergedPages(label="worker")
    other = "# TYPE vigil_requests gauge\nvigil_requests 5\n# EOF\n"
    families = merged.merge({"0": parse_page(page(10, 2, 9, 1, 1000.0)), "1": parse_page(other)})
    assert value(render(families), 'vigil_requests_total{code="OK",method="Predict"}') == 10


def test_the_label_must_be_a_label_name() -> None:
    with pytest.raises(ValueError, match="not a valid label name"):
        MergedPages(label="a-b")
