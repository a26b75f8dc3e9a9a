"""Anomaly bands and linear trends: what anomaly and trend alert rules remember of each series, and how they judge it.

Each tracker holds one labelled series' recent past, bounded by its rule's window, and judges every new value with
arithmetic on the time the engine passes in (no clock of its own), so it is as deterministic as the engine.
"""

from __future__ import annotations

import enum
import logging
import math
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

MAD_SCALE = 1.4826
"""Scales the median absolute deviation so that it estimates the standard deviation of normally distributed data."""

Details = tuple[tuple[str, float], ...]
"""Figures a summary can show besides the value, e.g. (("lower", 0.04), ("upper", 0.06))."""


class Method(enum.StrEnum):
    """How an anomaly rule builds its band."""

    MAD = "mad"
    """Rolling median ± k × MAD (scaled by MAD_SCALE) of the values in the window."""
    EWMA = "ewma"
    """An EWMA control chart: EWMA mean ± k × the square root of the EWMA variance."""


class Direction(enum.StrEnum):
    """Which side of the band counts as anomalous."""

    ABOVE = "above"
    BELOW = "below"
    BOTH = "both"


def _check_number(what: str, value: object, *, low: float, inclusive: bool = True,
                  high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value > high or (value < low if inclusive else value <= low):
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise ValueError(f"{what} must be a finite number {bound}" + (f" and <= {high:g}" if high < math.inf else "")
                         + f", got {value!r}")
    return float(value)


def _check_count(what: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


@dataclass(frozen=True)
class Anomaly:
    """An anomaly rule's parameters: fire when a value leaves the band its series' own earlier values make.

    The band is centre ± max(k × spread, min_half_width, min_half_width_ratio × |centre|); the floors keep a
    near-constant series from firing on noise. Exactly one of `window_seconds` and `window_points` is set.

    >>> Anomaly(method="ewma", k=4, window_seconds=1800, min_points=30, direction="above", min_half_width=0.01)
    """

    method: Method = Method.MAD
    k: float = 4.0
    """Half-width of the band in standard deviations. Not 3: one evaluation every 5 s would see a value beyond
    3 sigma about every half hour even on perfectly normal noise."""
    window_seconds: float | None = 600.0
    """The history a MAD band is built from, and for both methods how long a baseline that takes nothing in
    (every value anomalous) stays in use before it is forgotten and learnt again."""
    window_points: int | None = None
    """The same as a number of evaluations instead of a duration."""
    min_points: int = 20
    """Values a band needs before the rule can fire (the warm-up)."""
    direction: Direction = Direction.BOTH
    min_half_width: float = 0.0
    """The band's least half-width, in the signal's unit."""
    min_half_width_ratio: float = 0.1
    """The band's least half-width as a fraction of its centre."""
    alpha: float = 0.05
    """EWMA smoothing factor: the weight of the newest value (0.05: a memory of about 40 evaluations, enough for a
    steady estimate of the variance)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", Method(self.method))
        except ValueError:
            raise ValueError(f"anomaly method must be one of {', '.join(Method)}, got {self.method!r}") from None
        try:
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError:
            raise ValueError(f"anomaly direction must be one of {', '.join(Direction)}, "
                             f"got {self.direction!r}") from None
        object.__setattr__(self, "k", _check_number("anomaly k", self.k, low=0, inclusive=False))
        if (self.window_seconds is None) == (self.window_points is None):
            raise ValueError("anomaly window: set exactly one of window_seconds and window_points, got "
                             f"{self.window_seconds!r} and {self.window_points!r}")
        if self.window_seconds is not None:
            object.__setattr__(self, "window_seconds",
                               _check_number("anomaly window_seconds", self.window_seconds, low=0, inclusive=False))
        min_points = _check_count("anomaly min_points", self.min_points, low=2)
        if self.window_points is not None:
            _check_count("anomaly window_points", self.window_points, low=2)
            if min_points > self.window_points:
                raise ValueError(f"anomaly min_points ({min_points}) must not exceed window_points "
                                 f"({self.window_points}): the band could never be built")
        object.__setattr__(self, "min_half_width", _check_number("anomaly min_half_width", self.min_half_width,
                                                                 low=0))
        object.__setattr__(self, "min_half_width_ratio",
                           _check_number("anomaly min_half_width_ratio", self.min_half_width_ratio, low=0))
        object.__setattr__(self, "alpha", _check_number("anomaly alpha", self.alpha, low=0, inclusive=False, high=1))


@dataclass(frozen=True)
class Trend:
    """A trend rule's parameters: a least-squares line through the last `window_seconds` of a series predicts
    whether `value OP threshold` will hold within `horizon_seconds`.

    >>> Trend(window_seconds=900, horizon_seconds=600, min_points=10)
    """

    window_seconds: float
    horizon_seconds: float
    min_points: int = 10
    """Values in the window the fit needs before the rule can fire."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "window_seconds",
                           _check_number("trend window_seconds", self.window_seconds, low=0, inclusive=False))
        object.__setattr__(self, "horizon_seconds",
                           _check_number("trend horizon_seconds", self.horizon_seconds, low=0, inclusive=False))
        _check_count("trend min_points", self.min_points, low=2)


@dataclass(frozen=True)
class Verdict:
    """One value judged: whether the rule's condition holds, the alert's value, and figures for the summary."""

    holds: bool
    value: float
    details: Details = ()


class Tracker(Protocol):
    """One series' memory for one rule."""

    def judge(self, value: float, now: float) -> Verdict:
        """Judge `value`, seen at `now`, against the past, then remember it."""
        ...


class BandTracker:
    """One series' normal band for an anomaly rule.

    Each value is judged against the band of earlier values only. A value outside the band (on either side) does
    not enter the baseline, so a sustained spike keeps firing instead of widening the band until it looks normal.
    A baseline that has taken nothing in for a whole window is stale: it is dropped and learnt again from the
    values that follow (a warm-up, during which the rule cannot fire), so a lasting change of level resolves
    after about a window instead of firing forever.

    >>> tracker = BandTracker(Anomaly(min_points=20))
    >>> tracker.judge(0.05, now=1000.0).holds
    False
    """

    def __init__(self, anomaly: Anomaly) -> None:
        self._anomaly = anomaly
        self._points: deque[tuple[float, float]] = deque(maxlen=anomaly.window_points)
        self._count = 0
        self._mean = 0.0
        self._variance = 0.0
        self._squares = 0.0
        self._last_taken: float | None = None
        self._rejected = 0

    def judge(self, value: float, now: float) -> Verdict:
        if not math.isfinite(value):
            return Verdict(False, value)
        if self._is_stale(now):
            self._forget()
        band = self._band(now)
        if band is None:
            self._take(value, now)
            return Verdict(False, value)
        centre, half = band
        lower, upper = centre - half, centre + half
        direction = self._anomaly.direction
        above = value > upper
        below = value < lower
        if above or below:
            self._rejected += 1
        else:
            self._take(value, now)
        holds = (above and direction is not Direction.BELOW) or (below and direction is not Direction.ABOVE)
        return Verdict(holds, value, (("baseline", centre), ("lower", lower), ("upper", upper)))

    def _is_stale(self, now: float) -> bool:
        anomaly = self._anomaly
        if self._last_taken is None:
            return False
        if anomaly.window_points is not None:
            return self._rejected >= anomaly.window_points
        assert anomaly.window_seconds is not None
        return now - self._last_taken >= anomaly.window_seconds

    def _forget(self) -> None:
        self._points.clear()
        self._count = 0
        self._mean = self._variance = self._squares = 0.0
        self._last_taken = None
        self._rejected = 0

    def _band(self, now: float) -> tuple[float, float] | None:
        """(centre, half-width) of the earlier values, or None while there are too few."""
        anomaly = self._anomaly
        if anomaly.method is Method.MAD:
            if anomaly.window_seconds is not None:
                while self._points and self._points[0][0] <= now - anomaly.window_seconds:
                    self._points.popleft()
            if len(self._points) < anomaly.min_points:
                return None
            values = [v for _, v in self._points]
            centre = statistics.median(values)
            spread = MAD_SCALE * statistics.median(abs(v - centre) for v in values)
        else:
            if self._count < anomaly.min_points:
                return None
            centre, spread = self._mean, math.sqrt(self._variance)
        half = max(anomaly.k * spread, anomaly.min_half_width, anomaly.min_half_width_ratio * abs(centre))
        return centre, half

    def _take(self, value: float, now: float) -> None:
        self._last_taken = now
        self._rejected = 0
        if self._anomaly.method is Method.MAD:
            self._points.append((now, value))
            return
        self._count += 1
        if self._count <= self._anomaly.min_points:
            # The warm-up's exact mean and variance (Welford) start the EWMA, rather than the first value alone.
            delta = value - self._mean
            self._mean += delta / self._count
            self._squares += delta * (value - self._mean)
            self._variance = self._squares / self._count
            return
        alpha = self._anomaly.alpha
        delta = value - self._mean
        self._mean += alpha * delta
        self._variance = (1 - alpha) * (self._variance + alpha * delta * delta)


class TrendTracker:
    """One series' recent values for a trend rule, fitted by least squares on each evaluation.

    The rule holds when the fitted line meets `holds` (`value OP threshold`) at some time between now and now +
    horizon; the line is monotonic, so checking both ends is enough. The verdict's value is the prediction for
    now + horizon; its details are the observed value, the prediction and `eta`, the seconds until the line
    crosses the threshold (0 when it already has, NaN when it does not within the horizon).

    >>> tracker = TrendTracker(Trend(900, 600), holds=lambda v: v > 500, threshold=500)
    """

    def __init__(self, trend: Trend, *, holds: Callable[[float], bool], threshold: float) -> None:
        self._trend = trend
        self._holds = holds
        self._threshold = threshold
        self._points: deque[tuple[float, float]] = deque()

    def judge(self, value: float, now: float) -> Verdict:
        if not math.isfinite(value):
            return Verdict(False, value)
        trend = self._trend
        self._points.append((now, value))
        while self._points[0][0] <= now - trend.window_seconds:
            self._points.popleft()
        if len(self._points) < trend.min_points:
            return Verdict(False, value, (("current", value),))
        # Times relative to now: Unix seconds squared would lose the precision the fit needs.
        times = [t - now for t, _ in self._points]
        values = [v for _, v in self._points]
        t_mean, v_mean = statistics.fmean(times), statistics.fmean(values)
        spread = sum((t - t_mean) ** 2 for t in times)
        if spread == 0:
            return Verdict(False, value, (("current", value),))
        slope = sum((t - t_mean) * (v - v_mean) for t, v in zip(times, values, strict=True)) / spread
        fitted_now = v_mean - slope * t_mean
        predicted = fitted_now + slope * trend.horizon_seconds
        if self._holds(fitted_now):
            eta = 0.0
        elif self._holds(predicted) and slope != 0:
            eta = min(max((self._threshold - fitted_now) / slope, 0.0), trend.horizon_seconds)
        else:
            eta = math.nan
        return Verdict(not math.isnan(eta), predicted, (("current", value), ("predicted", predicted), ("eta", eta)))
