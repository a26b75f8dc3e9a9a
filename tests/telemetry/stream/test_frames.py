"""Percentiles estimated from histogram buckets land in the bucket that holds the true percentile."""

from __future__ import annotations

from bisect import bisect_left

import numpy as np
import pytest

from vigil.telemetry.metrics.aggregates import Histogram
from vigil.telemetry.metrics.instruments import DURATION_BUCKETS
from vigil.telemetry.stream.frames import quantile


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_quantile_estimate_is_within_the_true_values_bucket(seed: int, q: float) -> None:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(mean=-6.0 + seed, sigma=1.2, size=5000)  # latencies from ~0.1 ms to seconds
    histogram = Histogram("d", "s", "", DURATION_BUCKETS, ("m",))
    for value in values:
        histogram.record(float(value), ("x",))
    series = histogram.read()[("x",)]
    estimate = quantile(q, histogram.bounds, series.counts)
    truth = float(np.quantile(values, q, method="inverted_cdf"))
    bounds = (0.0, *histogram.bounds, float("inf"))
    bucket = bisect_left(histogram.bounds, truth)  # the bucket holding the true value
    low, high = bounds[bucket], bounds[bucket + 1]
    if high == float("inf"):
        assert estimate == histogram.bounds[-1]
    else:
        assert low <= estimate <= high, (truth, estimate, low, high)


def test_quantile_of_nothing_is_zero_and_of_one_bucket_interpolates() -> None:
    assert quantile(0.5, (1.0, 2.0), [0, 0, 0]) == 0.0
    assert quantile(0.5, (1.0, 2.0), [0, 10, 0]) == pytest.approx(1.5)
    assert quantile(0.99, (1.0, 2.0), [0, 0, 4]) == 2.0
