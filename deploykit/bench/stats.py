"""Latency statistics as trtexec reports them, and the comparison of two runs against their own noise.

Percentiles are nearest-rank: the p-th percentile of n sorted samples is the ceil(p/100 * n)-th smallest
(trtexec's `findPercentile` computes the same index, n - 1 - floor((1 - p/100) n), in float arithmetic);
the median is the middle sample, or the mean of the two middle ones; std is the population deviation.

The spread shown beside a median is p10-p90 (nearest rank). The ratio of two contenders' medians (a speed-up)
carries a 95% percentile-bootstrap interval: contenders timed round-robin in one run are resampled by round
(paired: round i's samples of both are kept together, so a burst of load that slowed both stays in both), others
independently. Two contenders are tied when that interval contains 1.

A change between two runs is flagged when the bootstrap 95% interval of the difference of their medians
excludes zero and the difference exceeds a small practical threshold (default 2% of the baseline median):
medians because latency distributions have long right tails, the bootstrap because it needs no model of
that tail. The interval covers the noise within the two runs; drift between runs (thermal state, other
processes) is what the 2% floor is for. With fewer than 5 samples on either side the band is half the
larger interquartile range; with a single sample on either side there is no band and no verdict ("too few
samples"): one sample has no spread, and a band of zero width would call any difference real.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

PERCENTILES = (90, 95, 99)
CONFIDENCE = 0.95
RESAMPLES = 1000
Verdict = Literal["faster", "slower", "within noise", "too few samples"]


def nearest_rank(sorted_values: Sequence[float] | np.ndarray, percentile: float) -> float:
    """The nearest-rank percentile of values sorted in ascending order (exact rank arithmetic)."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no samples")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile {percentile} is outside [0, 100]")
    rank = math.ceil(Fraction(str(percentile)) * n / 100)  # Fraction: 0.9 * 10 must be 9, not 9.000000000000002
    return float(sorted_values[max(rank, 1) - 1])


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-iteration times in milliseconds."""

    count: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    p10: float | None = None  # absent from results written before the spread was recorded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
    values = np.sort(np.asarray(samples_ms, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no samples to summarize")
    p90, p95, p99 = (nearest_rank(values, p) for p in PERCENTILES)
    return LatencyStats(
        count=int(values.size), min=float(values[0]), mean=float(values.mean()), median=float(np.median(values)),
        p90=p90, p95=p95, p99=p99, max=float(values[-1]), std=float(values.std()),
        p10=nearest_rank(values, 10),
    )


@dataclass(frozen=True)
class Ratio:
    """median(numerator) / median(denominator) with its bootstrap interval; a speed-up of B over A is
    median_ratio(A's samples, B's samples). low and high are None when there is no interval: a side with one
    sample has nothing to resample (a zero-width interval there would claim a certainty one round cannot give),
    and older results saved the bare number."""

    value: float
    low: float | None
    high: float | None
    paired: bool

    @property
    def tied(self) -> bool:
        """The interval contains 1, or there is none: the two cannot be told apart in this run."""
        return self.low is None or self.high is None or self.low <= 1.0 <= self.high

    def text(self) -> str:
        """'1.90x (1.82-1.97)', or '1.90x (no interval: ...)'."""
        if self.low is None or self.high is None:
            return f"{self.value:.2f}x (no interval: too few rounds to resample; time more rounds)"
        return f"{self.value:.2f}x ({self.low:.2f}-{self.high:.2f})"

    def scaled(self, factor: float) -> Ratio:
        """The same ratio and interval times `factor` (per image from per batch)."""
        def times(bound: float | None) -> float | None:
            return None if bound is None else bound * factor
        return Ratio(self.value * factor, times(self.low), times(self.high), self.paired)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Ratio | None:
        """A Ratio from its dict; None for None, and a bare number (older results) as one without an interval."""
        if data is None:
            return None
        if isinstance(data, (int, float)):
            return cls(float(data), None, None, paired=False)
        low, high = data.get("low"), data.get("high")
        return cls(float(data["value"]), None if low is None else float(low), None if high is None else float(high),
                   bool(data["paired"]))


def median_ratio(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray, *,
                 paired: bool, resamples: int = RESAMPLES, seed: int = 0, max_samples: int = 4000) -> Ratio:
    """median(numerator) / median(denominator) and its 95% percentile-bootstrap interval (module docstring).
    Paired samples must be equally many, index i of both from the same round. Seeded: the same samples give
    the same interval, so a verdict rebuilt from a saved run says the same."""
    a = np.asarray(numerator, dtype=np.float64)
    b = np.asarray(denominator, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("both contenders need samples")
    if paired and a.size != b.size:
        raise ValueError(f"paired samples must be equally many ({a.size} and {b.size})")
    value = float(np.median(a) / np.median(b))
    if min(a.size, b.size) < 2:  # nothing to resample: no interval rather than one of zero width
        return Ratio(value, None, None, paired)
    rng = np.random.default_rng(seed)
    if a.size > max_samples:  # long runs of fast models: a random subset keeps this quick
        keep = rng.choice(a.size, max_samples, replace=False)
        a, b = (a[keep], b[keep]) if paired else (a[keep], b)
    if not paired and b.size > max_samples:
        b = rng.choice(b, max_samples, replace=False)
    ratios = np.empty(resamples)
    chunk = 200
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        rows_a = rng.integers(0, a.size, (size, a.size))
        rows_b = rows_a if paired else rng.integers(0, b.size, (size, b.size))
        ratios[start:start + size] = np.median(a[rows_a], axis=1) / np.median(b[rows_b], axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Ratio(value, float(min(low, value)), float(max(high, value)), paired)


@dataclass(frozen=True)
class Change:
    """Current run vs baseline: difference of medians (ms), its noise band, and the verdict."""

    baseline_median: float
    current_median: float
    diff: float  # current - baseline, ms (positive = slower)
    relative: float  # diff / baseline median
    low: float | None  # noise band (bootstrap 95% interval of the difference, or +-IQR/2 with few samples);
    high: float | None  # None with a single sample on a side
    method: str
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_median_diff(baseline: np.ndarray, current: np.ndarray, *, resamples: int = 1000,
                          seed: int = 0, max_samples: int = 4000) -> tuple[float, float]:
    """95% percentile-bootstrap interval of median(current) - median(baseline)."""
    rng = np.random.default_rng(seed)
    # Long runs of fast kernels give tens of thousands of samples; a random subset keeps this fast.
    if baseline.size > max_samples:
        baseline = rng.choice(baseline, max_samples, replace=False)
    if current.size > max_samples:
        current = rng.choice(current, max_samples, replace=False)
    diffs = np.empty(resamples)
    chunk = 100
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        b = np.median(rng.choice(baseline, (size, baseline.size)), axis=1)
        c = np.median(rng.choice(current, (size, current.size)), axis=1)
        diffs[start:start + size] = c - b
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def _iqr(values: np.ndarray) -> float:
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def compare_samples(baseline: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, *,
                    min_change: float = 0.02, seed: int = 0) -> Change:
    """Is `current` faster or slower than `baseline` beyond the measured noise? Both are samples in ms."""
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if b.size == 0 or c.size == 0:
        raise ValueError("both runs need samples")
    b_med, c_med = float(np.median(b)), float(np.median(c))
    diff = c_med - b_med
    if min(b.size, c.size) < 2:  # no spread to measure the noise by (module docstring)
        return Change(baseline_median=b_med, current_median=c_med, diff=diff, relative=_relative(b_med, c_med),
                      low=None, high=None, method="a single sample on a side: no noise band",
                      verdict="too few samples")
    if b.size >= 5 and c.size >= 5:
        low, high = bootstrap_median_diff(b, c, seed=seed)
        method = "bootstrap 95% interval of the difference of medians"
    else:  # too few samples for a bootstrap to mean anything
        half = max(_iqr(b), _iqr(c)) / 2
        low, high = diff - half, diff + half
        method = "difference of medians +- half the larger IQR"
    return _verdict(b_med, c_med, low, high, method, min_change)


def _verdict(b_med: float, c_med: float, low: float, high: float, method: str, min_change: float) -> Change:
    diff = c_med - b_med
    relative = _relative(b_med, c_med)
    beyond_noise = low > 0 or high < 0
    verdict: Verdict = "within noise"
    if beyond_noise and abs(relative) >= min_change:
        verdict = "slower" if diff > 0 else "faster"
    return Change(baseline_median=b_med, current_median=c_med, diff=diff, relative=relative, low=low,
                  high=high, method=method, verdict=verdict)


def _relative(b_med: float, c_med: float) -> float:
    return (c_med - b_med) / b_med if b_med > 0 else math.inf
