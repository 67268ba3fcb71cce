"""run_kernels: a sweep with nothing it can time is an error, never an empty report that reads as done."""

from __future__ import annotations

from typing import Any, NoReturn

import pytest

from deploykit.bench import kernels
from deploykit.bench.interleave import TimingConfig
from deploykit.bench.kernels import KernelCase
from deploykit.bench.roofline import Peaks
from deploykit.errors import BackendUnavailable, InputError

FIXED = Peaks(gemm_gflops=100.0, copy_gbps=10.0, threads=1, gemm_size=64, copy_mbytes=1.0, seconds=0.0)
FAST = TimingConfig(warmup_s=0.0, iterations=2, min_warmup_iterations=0, pause_s=0.0)


def _tiny_cases(*, quick: bool = False, suites: object = None) -> list[KernelCase]:
    return [KernelCase("dilated", "tiny dilated", "dilated", 4, 4, 5, 1)]


def test_a_backend_and_precision_that_never_go_together_fail_before_the_peaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """--backend torch --precision fp16 timed nothing, measured the peaks, printed an empty table: exit 0."""
    def no_peaks(threads: int | None = None, quick: bool = False) -> NoReturn:
        raise AssertionError("the peaks were measured for a sweep of nothing")

    monkeypatch.setattr(kernels, "measure_peaks", no_peaks)
    with pytest.raises(InputError, match=r"nothing to time.*choose from --backend torch --precision fp32"):
        kernels.run_kernels(quick=True, backends=["torch"], precisions=["fp16"])


def test_a_sweep_whose_every_variant_fails_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*args: Any) -> NoReturn:
        raise BackendUnavailable("no such device")

    monkeypatch.setattr(kernels, "measure_peaks", lambda threads=None, quick=False: FIXED)
    monkeypatch.setattr(kernels, "plan_cases", _tiny_cases)
    monkeypatch.setattr(kernels, "_make_step", unavailable)
    with pytest.raises(BackendUnavailable, match="nothing was timed: torch fp32: BackendUnavailable: no such device"):
        kernels.run_kernels(quick=True, backends=["torch"], precisions=["fp32"], config=FAST)
