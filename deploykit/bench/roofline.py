"""This machine's peaks, measured on the spot, and the roofline bound they imply.

- Compute peak: the best of repeated large square fp32 matrix products (torch.mm, which calls the BLAS
  sgemm) with the benchmark's thread count. It is the practical peak a convolution can hope for, not the
  datasheet number: on a 2-core AVX2 AMD EPYC (Zen 3) about 130 GFLOP/s against 2 x 16 FLOP x 3+ GHz.
- Memory bandwidth: the best of repeated copies of a large fp32 array (torch `copy_`, multi-threaded),
  counting read + write bytes as STREAM's Copy does. Arrays of 128 MB are far beyond any cache.

The roofline bound of an operation with F FLOPs moving B bytes is max(F / peak, B / bandwidth) seconds;
a chain of operations is bounded by the sum of its members' bounds. Efficiency = bound / measured time.
Every peak is fp32: an INT8 or FP16 kernel may exceed 100% of it, which says so plainly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Peaks:
    gemm_gflops: float  # fp32 sgemm, best of several
    copy_gbps: float  # read + write bytes per second of a large copy, best of several
    threads: int
    gemm_size: int
    copy_mbytes: float  # size of one array copied
    seconds: float  # time spent measuring
    device: str = "cpu"  # "cpu", or "cuda: <GPU name>" for measure_gpu_peaks

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the memory and compute roofs meet."""
        return self.gemm_gflops / self.copy_gbps

    def to_dict(self) -> dict[str, Any]:
        """The fields only, so that Peaks(**peaks.to_dict()) round-trips (the method is in this docstring:
        fp32 torch.mm of gemm_size^2 matrices, best of several; torch copy_ of copy_mbytes, read+write)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Peaks:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run a block with `threads` intra-op threads (None keeps torch's setting), restoring it after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _best_rate(step: Any, work: float, budget_s: float, min_reps: int) -> float:
    """Best work/second of repeated `step()` calls within about `budget_s` (after one warm-up call)."""
    step()
    best = 0.0
    started = time.perf_counter()
    reps = 0
    while reps < min_reps or time.perf_counter() - started < budget_s:
        t0 = time.perf_counter()
        step()
        elapsed = time.perf_counter() - t0
        best = max(best, work / elapsed)
        reps += 1
    return best


def measure_gemm_gflops(threads: int | None = None, *, size: int = 2048, budget_s: float = 1.0) -> float:
    with torch_threads(threads), torch.inference_mode():
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        out = torch.empty(size, size)
        return _best_rate(lambda: torch.mm(a, b, out=out), 2.0 * size**3, budget_s, 3) / 1e9


def measure_copy_gbps(threads: int | None = None, *, mbytes: float = 128.0, budget_s: float = 0.5) -> float:
    elements = int(mbytes * 2**20 / 4)
    with torch_threads(threads), torch.inference_mode():
        src = torch.ones(elements)
        dst = torch.empty(elements)
        return _best_rate(lambda: dst.copy_(src), 2.0 * elements * 4, budget_s, 3) / 1e9


def measure_peaks(threads: int | None = None, *, quick: bool = False) -> Peaks:
    """Measure both peaks with `threads` threads. Benchmarks measure before and after their runs and keep
    the better of each (`best_of`): another process busy during one measurement lowers it."""
    started = time.perf_counter()
    size, budget = (1536, 0.4) if quick else (2048, 1.5)
    gemm = measure_gemm_gflops(threads, size=size, budget_s=budget)
    mbytes = 64.0 if quick else 128.0
    copy = measure_copy_gbps(threads, mbytes=mbytes, budget_s=budget / 2)
    return Peaks(gemm_gflops=gemm, copy_gbps=copy, threads=threads or torch.get_num_threads(), gemm_size=size,
                 copy_mbytes=mbytes, seconds=time.perf_counter() - started)


def measure_gpu_peaks(*, quick: bool = False) -> Peaks | None:
    """The same two peaks on the CUDA device torch sees (None without one): fp32 torch.mm (TF32 off, so it
    is the fp32 roof) and a device-to-device copy, each call synchronized."""
    if not torch.cuda.is_available():
        return None
    started = time.perf_counter()
    size, mbytes, budget = (2048, 128.0, 0.3) if quick else (4096, 512.0, 1.0)
    device = torch.device("cuda")
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
            out = torch.empty(size, size, device=device)

            def matmul() -> None:
                torch.mm(a, b, out=out)
                torch.cuda.synchronize()
            gemm = _best_rate(matmul, 2.0 * size**3, budget, 3) / 1e9
            elements = int(mbytes * 2**20 / 4)
            src, dst = torch.ones(elements, device=device), torch.empty(elements, device=device)

            def copy_once() -> None:
                dst.copy_(src)
                torch.cuda.synchronize()
            copy = _best_rate(copy_once, 8.0 * elements, budget, 3) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return Peaks(gemm_gflops=gemm, copy_gbps=copy, threads=0, gemm_size=size, copy_mbytes=mbytes,
                 seconds=time.perf_counter() - started, device=f"cuda: {torch.cuda.get_device_name(0)}")


def best_of(first: Peaks, second: Peaks) -> Peaks:
    return Peaks(gemm_gflops=max(first.gemm_gflops, second.gemm_gflops),
                 copy_gbps=max(first.copy_gbps, second.copy_gbps), threads=first.threads,
                 gemm_size=first.gemm_size, copy_mbytes=first.copy_mbytes, seconds=first.seconds + second.seconds)


def spread_warning(first: Peaks, second: Peaks, tolerance: float = 0.15) -> str | None:
    """A warning when the before/after measurements disagree: the machine was busy, efficiencies are rough."""
    def gap(a: float, b: float) -> float:
        return abs(a - b) / max(a, b)
    g, c = gap(first.gemm_gflops, second.gemm_gflops), gap(first.copy_gbps, second.copy_gbps)
    if max(g, c) <= tolerance:
        return None
    return (f"the machine's peaks changed during the run (sgemm {first.gemm_gflops:.0f} -> "
            f"{second.gemm_gflops:.0f} GFLOP/s, copy {first.copy_gbps:.1f} -> {second.copy_gbps:.1f} GB/s): "
            "something else was running; timings and efficiencies are unreliable, rerun on a quiet machine")


def bound_seconds(flops: float, bytes_moved: float, peaks: Peaks) -> float:
    """Roofline lower bound on the time of one operation."""
    return max(flops / (peaks.gemm_gflops * 1e9), bytes_moved / (peaks.copy_gbps * 1e9))


def chain_bound_seconds(ops: Sequence[tuple[float, float]], peaks: Peaks) -> float:
    """Lower bound of operations run one after the other: the sum of their bounds. ops = (flops, bytes)."""
    return sum(bound_seconds(f, b, peaks) for f, b in ops)


def attainable_gflops(flops: float, bytes_moved: float, peaks: Peaks) -> float:
    """The roofline: min(peak, arithmetic intensity x bandwidth), in GFLOP/s."""
    if bytes_moved <= 0:
        return peaks.gemm_gflops
    return min(peaks.gemm_gflops, flops / bytes_moved * peaks.copy_gbps)


def efficiency_percent(bound_s: float, measured_s: float) -> float:
    return 100.0 * bound_s / measured_s if measured_s > 0 else 0.0
