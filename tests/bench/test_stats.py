"""Latency statistics (nearest-rank percentiles as trtexec) and the noise-aware comparison of two runs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from deploykit.bench.stats import Ratio, compare_samples, median_ratio, nearest_rank, summarize


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


@pytest.mark.parametrize(("baseline", "current"),
                         [([10.0], [20.0]), ([10.0], [20.0, 20.1, 20.2]), ([10.0, 10.1], [9.0])])
def test_a_single_sample_on_a_side_gives_no_band_and_no_verdict(baseline: list[float], current: list[float]) -> None:
    """One sample against one: the IQR band had zero width, and any difference read as 'faster' or 'slower'."""
    change = compare_samples(baseline, current)
    assert (change.low, change.high, change.verdict) == (None, None, "too few samples")
    assert change.diff == pytest.approx(float(np.median(current)) - float(np.median(baseline)))


def test_the_spread_is_p10_to_p90_by_nearest_rank() -> None:
    stats = summarize([float(v) for v in range(1, 21)])
    assert (stats.p10, stats.p90) == (2.0, 18.0)  # ranks ceil(2) and ceil(18)


def test_a_paired_ratio_ignores_load_that_slowed_both_contenders_of_a_round() -> None:
    rng = np.random.default_rng(0)
    burst = rng.choice([1.0, 2.5], 60)  # half the rounds under a neighbour's burst
    noise = rng.normal(1.0, 0.01, (3, 60))
    slow, fast, twin = 30 * burst * noise[0], 20 * burst * noise[1], 30 * burst * noise[2]
    paired = median_ratio(slow, fast, paired=True)
    apart = median_ratio(slow, fast, paired=False)
    assert paired.low < 1.5 < paired.high and paired.high - paired.low < 0.05
    assert apart.high - apart.low > 5 * (paired.high - paired.low)  # the same samples, rounds forgotten
    assert not paired.tied and median_ratio(slow, twin, paired=True).tied
    assert median_ratio(slow, fast, paired=True) == paired  # seeded: a saved run gives the same verdict


def test_ratio_edge_cases_and_round_trip() -> None:
    single = median_ratio([10.0], [5.0], paired=True)
    assert (single.value, single.low, single.high) == (2.0, None, None)  # one round: no interval, not (2.0-2.0)
    assert single.tied and "no interval" in single.text() and "nan" not in single.text()
    assert median_ratio([10.0, 11.0], [5.0], paired=False).low is None
    assert Ratio.from_dict(single.to_dict()) == single
    with pytest.raises(ValueError, match="equally many"):
        median_ratio([1.0, 2.0], [1.0], paired=True)
    with pytest.raises(ValueError):
        median_ratio([], [1.0], paired=False)
    ratio = median_ratio([3.0, 3.2, 2.9, 3.1], [1.0, 1.1, 0.9, 1.0], paired=True)
    assert ratio.low is not None and ratio.high is not None
    assert ratio.low <= ratio.value <= ratio.high and Ratio.from_dict(ratio.to_dict()) == ratio
    assert Ratio.from_dict(1.5) == Ratio(1.5, None, None, paired=False) and Ratio.from_dict(None) is None
    assert Ratio(2.0, 1.5, 2.5, True).scaled(2) == Ratio(4.0, 3.0, 5.0, True)
    assert Ratio(2.0, None, None, True).scaled(2) == Ratio(4.0, None, None, True)
    assert Ratio(1.904, 1.851, 1.952, True).text() == "1.90x (1.85-1.95)"
