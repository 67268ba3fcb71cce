"""Roofline arithmetic on fixed peaks, and the peak probes run (no timing assertions)."""

from __future__ import annotations

import pytest

from deploykit.bench.roofline import (
    Peaks,
    attainable_gflops,
    best_of,
    bound_seconds,
    chain_bound_seconds,
    efficiency_percent,
    measure_copy_gbps,
    measure_gemm_gflops,
    spread_warning,
)

PEAKS = Peaks(gemm_gflops=100.0, copy_gbps=10.0, threads=2, gemm_size=2048, copy_mbytes=128.0, seconds=1.0)


def test_bounds_pick_the_binding_roof() -> None:
    assert bound_seconds(1e9, 1e6, PEAKS) == pytest.approx(0.01)  # compute-bound: 1 GFLOP at 100 GFLOP/s
    assert bound_seconds(1e6, 1e9, PEAKS) == pytest.approx(0.1)  # memory-bound: 1 GB at 10 GB/s
    assert PEAKS.ridge == pytest.approx(10.0)
    assert attainable_gflops(1e9, 1e9, PEAKS) == pytest.approx(10.0)  # intensity 1 FLOP/byte
    assert attainable_gflops(1e9, 1e6, PEAKS) == pytest.approx(100.0)
    assert chain_bound_seconds([(1e9, 1e6), (1e6, 1e9)], PEAKS) == pytest.approx(0.11)
    assert efficiency_percent(0.01, 0.04) == pytest.approx(25.0)


def test_best_of_and_spread_warning() -> None:
    busy = Peaks(40.0, 12.0, 2, 2048, 128.0, 1.0)
    best = best_of(PEAKS, busy)
    assert (best.gemm_gflops, best.copy_gbps) == (100.0, 12.0)
    assert spread_warning(PEAKS, busy) is not None and "quiet machine" in str(spread_warning(PEAKS, busy))
    assert spread_warning(PEAKS, Peaks(95.0, 10.5, 2, 2048, 128.0, 1.0)) is None


def test_probes_return_positive_rates() -> None:
    assert measure_gemm_gflops(1, size=64, budget_s=0.01) > 0
    assert measure_copy_gbps(1, mbytes=1.0, budget_s=0.01) > 0


def test_peaks_round_trip_through_their_dict() -> None:
    assert Peaks(**PEAKS.to_dict()) == PEAKS
    assert Peaks.from_dict({**PEAKS.to_dict(), "extra": 1}) == PEAKS
