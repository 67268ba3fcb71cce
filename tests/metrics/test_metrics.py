"""Numeric and task metrics on small cases computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploykit.errors import ParityError
from deploykit.metrics.numeric import SAMPLE_STRIDE, high_percentile, numeric_metrics
from deploykit.metrics.scores import Scores, task_metrics
from deploykit.metrics.tasks import cc, fixations_from_reference, kld, nss, sim
from deploykit.types import TASKS


def test_numeric_metrics_by_hand() -> None:
    ref = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    cand = np.array([1.0, 2.0, 3.0, 5.0], np.float32)
    m = numeric_metrics(ref, cand, atol=0.5, rtol=0.0)
    assert m.max_abs == 1.0
    assert m.mean_abs == 0.25
    assert m.p99_abs == pytest.approx(0.97)  # diffs 0,0,0,1: position 0.99 * 3 = 2.97 -> 0.97
    assert m.max_rel == pytest.approx(0.25)  # 1 / 4
    assert m.cosine == pytest.approx(34 / math.sqrt(30 * 39))  # <r,c> = 34, |r|^2 = 30, |c|^2 = 39
    assert m.snr_db == pytest.approx(10 * math.log10(30))  # signal 30, noise 1
    assert m.beyond_tol == 0.25
    assert numeric_metrics(ref, cand, atol=0.0, rtol=0.3).beyond_tol == 0.0  # 1 <= 0.3 * 4
    assert (m.nan, m.inf) == (0, 0)


def test_numeric_metrics_identical_and_non_finite() -> None:
    ref = np.array([[0.5, -2.0]], np.float32)
    same = numeric_metrics(ref, ref.copy())
    assert (same.max_abs, same.cosine, same.snr_db, same.beyond_tol) == (0.0, 1.0, math.inf, 0.0)
    broken = numeric_metrics(ref, np.array([[np.nan, np.inf]], np.float32))
    assert (broken.nan, broken.inf) == (1, 1)
    assert math.isnan(broken.cosine) and broken.max_abs == math.inf


def test_numeric_metrics_reject_shape_mismatch() -> None:
    with pytest.raises(ParityError, match=r"reference \[2\], candidate \[3\]"):
        numeric_metrics(np.zeros(2), np.zeros(3))


@pytest.mark.parametrize("size", [1, 7, 999, 61_000, 200_003])
@pytest.mark.parametrize("q", [99.0, 99.9, 95.0, 50.0])
def test_high_percentile_is_numpys(size: int, q: float) -> None:
    rng = np.random.default_rng(size)
    for values in (np.abs(rng.standard_normal(size)), rng.integers(0, 3, size).astype(np.float64), np.zeros(size),
                   np.sort(rng.standard_normal(size))):
        assert high_percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(61_000, 140_000), q=st.floats(90.0, 100.0),
       distinct=st.integers(1, 50), sampled=st.floats(0.0, 10.0), stride_offset=st.integers(0, SAMPLE_STRIDE - 1))
def test_high_percentile_is_numpys_on_generated_arrays(seed: int, size: int, q: float, distinct: int,
                                                        sampled: float, stride_offset: int) -> None:
    """Ties (few distinct values) and values planted where the sample looks (every SAMPLE_STRIDE-th, shifted):
    the cases where a sampled threshold can mislead."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, distinct, size).astype(np.float64) * rng.exponential()
    values[stride_offset::SAMPLE_STRIDE] = sampled
    assert high_percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-300)


def test_high_percentile_checks_the_sampled_threshold() -> None:
    """Every sampled value is large: the threshold is too high for the 95th percentile (a whole-array fallback)
    and right for the 99th (a percent of the values are large)."""
    values = np.zeros(100_000)
    values[::SAMPLE_STRIDE] = 1.0
    assert high_percentile(values, 95) == float(np.percentile(values, 95)) == 0.0
    assert high_percentile(values, 99) == float(np.percentile(values, 99)) == 1.0
    values[::SAMPLE_STRIDE] = np.linspace(1.0, 2.0, values[::SAMPLE_STRIDE].size)
    assert high_percentile(values, 99.5) == pytest.approx(float(np.percentile(values, 99.5)), rel=1e-12)


def test_aggregate_takes_the_worst_input_and_the_mean_share() -> None:
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    good = numeric_metrics(ref, ref + 0.01)
    bad = numeric_metrics(ref, ref * np.array([1, 1, 1, 2]))
    scores = Scores(None)  # the numeric metrics, aggregated as their METRICS entries say
    scores.add(ref, ref + 0.01)
    scores.add(ref, ref * np.array([1, 1, 1, 2]))
    total = scores.result()
    assert total["max_abs"] == bad.max_abs == 4.0
    assert total["cosine"] == bad.cosine < good.cosine
    assert total["snr_db"] == bad.snr_db
    assert total["mean_abs"] == pytest.approx((0.01 + 1.0) / 2)  # (mean 0.01 + mean 4/4) / 2
    with pytest.raises(ParityError, match="no inputs"):
        Scores(None).result()


def _logits(labels: list[list[int]], classes: int) -> np.ndarray:
    """1,C,H,W scores whose argmax is `labels`."""
    return (np.eye(classes)[np.array(labels)].transpose(2, 0, 1)[None] * 5.0).astype(np.float32)


def test_segmentation_by_hand() -> None:
    ref = _logits([[0, 1], [2, 2]], 4)
    cand = _logits([[0, 1], [2, 1]], 4)
    got = task_metrics("segmentation", ref, cand)
    assert got["pixel_agreement"] == 0.75  # 3 of 4 pixels
    # class 0: 1/1; class 1: ref {(0,1)}, cand {(0,1),(1,1)} -> 1/2; class 2: ref {(1,0),(1,1)}, cand {(1,0)} -> 1/2;
    # class 3 is absent from both and ignored (not counted as 0 or 1)
    assert got["miou"] == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_segmentation_class_in_one_map_only_scores_zero() -> None:
    got = task_metrics("segmentation", _logits([[0, 0], [0, 0]], 4), _logits([[0, 0], [0, 3]], 4))
    assert got["miou"] == pytest.approx((3 / 4 + 0) / 2)  # class 0: 3/4, class 3: 0/1


def test_binary_segmentation_thresholds_at_zero() -> None:
    ref = np.array([[[[1.0, -1.0], [2.0, -2.0]]]], np.float32)  # labels 1 0 / 1 0
    cand = np.array([[[[1.0, 1.0], [-2.0, -2.0]]]], np.float32)  # labels 1 1 / 0 0
    got = task_metrics("segmentation", ref, cand)
    assert got["pixel_agreement"] == 0.5
    assert got["miou"] == pytest.approx((1 / 3 + 1 / 3) / 2)  # class 0: 1/3, class 1: 1/3


def test_miou_is_dataset_level_over_streamed_batches() -> None:
    accumulator = Scores(TASKS["segmentation"], numeric=False)
    accumulator.add(_logits([[0, 0], [0, 0]], 2), _logits([[0, 0], [0, 0]], 2))
    accumulator.add(_logits([[1, 1], [1, 1]], 2), _logits([[1, 1], [1, 0]], 2))
    got = accumulator.result()
    assert got["pixel_agreement"] == 7 / 8
    # over both batches: class 0 I=4 U=5, class 1 I=3 U=4 (a per-batch mean would give (1 + (1/2 + 3/4)/2) / 2)
    assert got["miou"] == pytest.approx((4 / 5 + 3 / 4) / 2)


R = np.array([[1.0, 2.0], [3.0, 4.0]])
C = np.array([[1.0, 2.0], [4.0, 3.0]])


def test_cc_by_hand() -> None:
    # centred: r = (-1.5, -0.5, 0.5, 1.5), c = (-1.5, -0.5, 1.5, 0.5); <r,c> = 4, |r|^2 = |c|^2 = 5
    assert cc(R, C) == pytest.approx(0.8)
    assert cc(R - 5, C * 2) == pytest.approx(0.8)  # invariant to shift and scale


def test_kld_by_hand() -> None:
    # Q = R / 10 = (.1 .2 .3 .4), P = C / 10 = (.1 .2 .4 .3): .3 log(.3/.4) + .4 log(.4/.3) = .1 log(4/3)
    assert kld(R, C) == pytest.approx(0.1 * math.log(4 / 3), rel=1e-9)
    assert kld(R, R) == pytest.approx(0.0, abs=1e-12)
    # logits are shifted to a minimum of 0 first: R - 5 becomes (0 1 2 3)
    assert kld(R - 5, C - 5) == pytest.approx(kld(R - 1, C - 1))


def test_sim_by_hand() -> None:
    # min-max then sum 1: R -> (0 1/6 1/3 1/2), C -> (0 1/6 1/2 1/3); sum of minima = 1/6 + 1/3 + 1/3
    assert sim(R, C) == pytest.approx(5 / 6)
    assert sim(R, R) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(20))
def test_identical_outputs_stay_within_each_metrics_range(seed: int) -> None:
    """Rounding alone put identical 48x48 maps at kld -5.1e-13 (the eps terms: -(N - 1) eps), shown in the deploy
    report as a negative divergence, and sim and cosine at 1.0000000000000002, beyond what a metric can reach."""
    ref = np.random.default_rng(seed).random((48, 48))
    same = ref.copy()
    assert kld(ref, same) == 0.0
    assert cc(ref, same) <= 1.0 and sim(ref, same) <= 1.0 and numeric_metrics(ref, same).cosine <= 1.0
    broken = same.copy()
    broken[0, 0] = np.nan  # the clip keeps a NaN a NaN: a broken candidate never reads as a perfect one
    assert math.isnan(kld(ref, broken)) and math.isnan(cc(ref, broken))


def test_nss_by_hand() -> None:
    fixations = fixations_from_reference(R)  # 2% of 4 pixels rounds to 0 -> at least one: the maximum at (1, 1)
    assert fixations.tolist() == [[False, False], [False, True]]
    std = math.sqrt(5 / 3)  # MATLAB std with N - 1: squared deviations 2.25 + .25 + .25 + 2.25 = 5, over 3
    assert nss(C, fixations) == pytest.approx((3 - 2.5) / std)
    assert nss(R, fixations) == pytest.approx((4 - 2.5) / std)
    assert nss(np.ones((2, 2)), fixations) == 0.0  # a constant map carries no information


def test_saliency_task_metrics_on_n1hw_maps() -> None:
    got = task_metrics("saliency", R[None, None], C[None, None])
    assert got["cc"] == pytest.approx(0.8)
    assert got["kld"] == pytest.approx(0.1 * math.log(4 / 3))
    assert got["sim"] == pytest.approx(5 / 6)
    assert got["nss_ratio"] == pytest.approx(1 / 3)  # 0.5 / 1.5 standard deviations
    same = task_metrics("saliency", np.stack([R, C])[:, None], np.stack([R, C])[:, None])
    assert same["cc"] == pytest.approx(1.0) and same["sim"] == pytest.approx(1.0)
    assert same["kld"] == pytest.approx(0.0, abs=1e-12) and same["nss_ratio"] == pytest.approx(1.0)


def test_fixations_take_the_top_two_percent() -> None:
    ref = np.arange(100, dtype=np.float64).reshape(10, 10)
    fixations = fixations_from_reference(ref)
    assert fixations.sum() == 2 and fixations[9, 9] and fixations[9, 8]


def test_task_metrics_reject_bad_input() -> None:
    with pytest.raises(ParityError, match="unknown task"):
        task_metrics("detection", R, R)
    with pytest.raises(ParityError, match="N,1,H,W"):
        task_metrics("saliency", np.zeros((1, 3, 2, 2)), np.zeros((1, 3, 2, 2)))
    with pytest.raises(ParityError, match="shapes differ"):
        task_metrics("segmentation", np.zeros((1, 3, 2, 2)), np.zeros((1, 3, 2, 3)))
