"""Latency statistics (nearest-rank percentiles as trtexec) and the noise-aware comparison of two runs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from deploykit.bench.stats import compare_samples, nearest_rank, summarize


def test_nearest_rank_hand_cases() -> None:
    ten = list(range(1, 11))
    assert nearest_rank(ten, 90) == 9  # rank ceil(0.9 * 10) = 9
    assert nearest_rank(ten, 95) == 10  # rank ceil(9.5) = 10
    assert nearest_rank(ten, 50) == 5
    assert nearest_rank(ten, 0) == 1
    assert nearest_rank(ten, 100) == 10
    hundred = list(range(1, 101))
    assert [nearest_rank(hundred, p) for p in (90, 95, 99)] == [90, 95, 99]  # 0.9 * 100 must not round to 91
    assert nearest_rank([7.5], 99) == 7.5
    twenty = [float(v) for v in range(20)]
    assert nearest_rank(twenty, 95) == 18.0  # rank 19


def test_nearest_rank_matches_trtexec_index_in_exact_arithmetic() -> None:
    # trtexec: timings[max(n - 1 - floor((1 - p/100) n), 0)]
    for n in range(1, 60):
        values = list(range(n))
        for p in (50, 90, 95, 99, 99.9):
            index = max(n - 1 - math.floor((1 - Fraction(str(p)) / 100) * n), 0)
            assert nearest_rank(values, p) == values[index], (n, p)


def test_nearest_rank_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        nearest_rank([], 50)
    with pytest.raises(ValueError):
        nearest_rank([1.0], 101)


def test_summarize_hand_case() -> None:
    stats = summarize([3.0, 1.0, 2.0, 4.0])
    assert (stats.count, stats.min, stats.max) == (4, 1.0, 4.0)
    assert stats.median == 2.5 and stats.mean == 2.5
    assert stats.p90 == 4.0 and stats.p95 == 4.0 and stats.p99 == 4.0  # rank ceil(3.6) = 4
    assert stats.std == pytest.approx(math.sqrt(1.25))  # population deviation
    odd = summarize([5.0, 1.0, 3.0])
    assert odd.median == 3.0 and odd.p90 == 5.0


def _latencies(seed: int, n: int = 300, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return scale * (10.0 + rng.gamma(2.0, 0.2, n))  # a right-skewed latency distribution around 10.4 ms


def test_same_distribution_is_within_noise() -> None:
    change = compare_samples(_latencies(1), _latencies(2))
    assert change.verdict == "within noise"
    assert change.low < 0 < change.high


def test_clear_shifts_are_flagged_both_ways() -> None:
    slower = compare_samples(_latencies(1), _latencies(2, scale=1.10))
    assert slower.verdict == "slower" and slower.low > 0 and slower.relative == pytest.approx(0.10, abs=0.02)
    faster = compare_samples(_latencies(1), _latencies(2, scale=0.90))
    assert faster.verdict == "faster" and faster.high < 0


def test_tiny_shift_below_the_practical_threshold_is_not_flagged() -> None:
    base = _latencies(1, n=3000)
    shifted = base + 0.05  # 0.5%: the bootstrap sees it, the 2% floor does not care
    change = compare_samples(base, shifted)
    assert change.low > 0
    assert change.verdict == "within noise"
    assert compare_samples(base, shifted, min_change=0.001).verdict == "slower"


def test_few_samples_use_the_iqr_band() -> None:
    change = compare_samples([10.0, 10.2, 10.1], [20.0, 20.3, 20.1])
    assert change.method.startswith("difference of medians +- half")
    assert change.verdict == "slower"
    close = compare_samples([10.0, 11.0, 12.0], [10.3, 11.3, 12.3])
    assert close.verdict == "within noise"
