"""Range methods: from a tensor's statistics to the amax of its symmetric INT8 range (scale = amax / 127).

- minmax: amax = max |x| seen. Never clips; a single outlier widens every step.
- percentile: amax = the given percentile of |x| (from the histogram, linear within a bin). Clips the tail.
- entropy: TensorRT's KL-divergence calibration as NVIDIA published it (Migacz, "8-bit Inference with
  TensorRT", GTC 2017; the same algorithm as pytorch-quantization's `_compute_amax_entropy`): a 2048-bin
  histogram of |x|; for *every* threshold i from 128 to 2048 bins (the exhaustive search), the reference
  distribution P is the first i bins with the clipped outliers added to bin i-1, the candidate Q merges those
  i bins into 128 levels (bin j into level floor(128 j / i)) and spreads each level's mass over its non-empty
  bins; amax is the upper edge of bin i for the i of least KL(P || Q), the last one on ties. Bin 0 takes bin
  1's count first (pytorch-quantization's step: the exact zeros of a ReLU output would otherwise dominate).
  How it differs from TensorRT's own calibrator, whose code is not published: the histogram range is the
  running max |x| rounded up by powers of two while streaming (TensorRT's two-pass calibration spans exactly
  the max |x|), so a threshold can fall between TensorRT's by up to one bin of a range up to twice as wide;
  and the legacy calibrator's per-tensor details (IInt8EntropyCalibrator2, removed in TensorRT 11) are not
  documented beyond the algorithm. `stride` > 1 trades the exhaustive search for a coarse-to-fine one.
- mse: the amax of least expected squared quantization error over the histogram of |x| (each bin's values
  spread evenly over it; bin 0 counted like bin 1, as entropy does, since a ReLU's exact zeros cost nothing):
  rounding error inside [-amax, amax], clipping error beyond it. It clips a heavy tail where
  that costs less than the coarser steps a wide range would give everything else (the "mse" calibrator of
  NVIDIA's pytorch-quantization minimizes the same quantity; ModelOpt's ONNX quantizer has only max and entropy).
Each method has a typed options dataclass (no untyped extra_options dicts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deploykit.calib.collect import TensorStats
from deploykit.calib.qdq import QMAX
from deploykit.errors import CalibrationError


@dataclass(frozen=True)
class MinMax:
    name = "minmax"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name}


@dataclass(frozen=True)
class Percentile:
    percentile: float = 99.99
    name = "percentile"

    def __post_init__(self) -> None:
        if not 50.0 < self.percentile <= 100.0:
            raise CalibrationError(f"percentile {self.percentile} is outside (50, 100]; try 99.99")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, **asdict(self)}


@dataclass(frozen=True)
class Entropy:
    levels: int = 128  # quantized bins of |x|: the positive half of INT8
    start: int = 128  # smallest threshold tried, in histogram bins
    stride: int = 1  # 1: every threshold (TensorRT's exhaustive search); k > 1: every k-th, then refined

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, **asdict(self)}

    name = "entropy"


@dataclass(frozen=True)
class Mse:
    start: int = 16  # smallest amax tried, in histogram bins (of collect.BINS)
    stride: int = 1  # 1: every bin edge; k > 1: every k-th, then refined

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, **asdict(self)}

    name = "mse"


Method = MinMax | Percentile | Entropy | Mse
METHODS: dict[str, type[MinMax] | type[Percentile] | type[Entropy] | type[Mse]] = {
    "minmax": MinMax, "percentile": Percentile, "entropy": Entropy, "mse": Mse,
}


@dataclass(frozen=True)
class Auto:
    """--calib-method auto: each candidate's ranges from the one collection of statistics, and the candidate
    whose INT8 graph scores best kept (deploykit.precision.range_choice measures them). minmax and entropy, in
    TensorRT form on benchmarks/data/heldout (benchmarks/results/int8_recovery.md, default recovery steps): the
    trained DeepLabv3+ MobileNetV2 needs minmax (pixel agreement 0.9747 against 0.9271), the trained MSI-Net
    entropy (CC 0.9831 against 0.9768). percentile and mse were ahead of the better of the two by 0.003 at
    most (mse on DeepLabv3+ 0.9776), within what one image's flips move agreement, and each would cost another
    recovery pass and scoring build (mse's exhaustive search alone took 41 s on DeepLabv3+ at 513x513)."""

    candidates: tuple[Method, ...] = (MinMax(), Entropy())
    name = "auto"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "candidates": [c.to_dict() for c in self.candidates]}


AUTO = Auto.name
# minmax: never clips, so never fails badly. Measured on the TensorRT-form INT8 graph run by ONNX Runtime
# against FP32 on benchmarks/data/heldout (benchmarks/qdq_placement.py --trained, calibrated on
# benchmarks/data/calib): trained small DeepLabv3+ MobileNetV2 at 513x513, pixel agreement minmax 0.968 /
# percentile 99.99 0.970 / entropy (exhaustive) 0.923; trained small MSI-Net at 240x320, CC minmax 0.973 /
# percentile 0.980 / entropy 0.983. Entropy (TensorRT's old calibrator default, ModelOpt's default) clips
# segmentation features too hard. A backend may default to auto instead (Backend.calib_method: TensorRT). The
# CPU backends keep minmax: auto made the demo's INT8 build 4.6 s slower (26.7 -> 31.4 s, same artifact), and
# in their UINT8 form it kept entropy for MSI-Net on the two images it scores, 0.007 CC behind minmax on the
# held-out images (benchmarks/results/int8_recovery.md).
DEFAULT_METHOD = "minmax"
CHOICES = (*METHODS, AUTO)  # what --calib-method accepts


def make_method(name: str | None, *, percentile: float | None = None,
                default: str = DEFAULT_METHOD) -> Method | Auto:
    chosen = name or default
    if chosen not in CHOICES:
        raise CalibrationError(f"unknown calibration method {chosen!r}; choose one of {', '.join(CHOICES)}")
    if percentile is not None and chosen != "percentile":
        raise CalibrationError(f"--percentile applies to the percentile method, not {chosen}")
    if chosen == AUTO:
        return Auto()
    if chosen == "percentile":
        return Percentile() if percentile is None else Percentile(percentile)
    return METHODS[chosen]()


def candidates(method: Method | Auto) -> tuple[Method, ...]:
    """The range methods whose ranges a calibration computes: auto's candidates, else the method itself."""
    return method.candidates if isinstance(method, Auto) else (method,)


def _bin_width(stats: TensorStats) -> float:
    assert stats.hist is not None
    return stats.hist_range / stats.hist.size


def percentile_amax(stats: TensorStats, percentile: float) -> float:
    if stats.hist is None or stats.hist_range == 0.0:
        return stats.absmax
    cumulative = np.cumsum(stats.hist)
    target = cumulative[-1] * percentile / 100.0
    index = int(np.searchsorted(cumulative, target, side="left"))
    below = float(cumulative[index - 1]) if index > 0 else 0.0
    within = (target - below) / max(float(stats.hist[index]), 1.0)
    return min(stats.absmax, (index + within) * _bin_width(stats))


def _divergences(hist: np.ndarray, thresholds: np.ndarray, levels: int) -> np.ndarray:
    """KL(P_i || Q_i) of every threshold i in `thresholds` at once (module docstring), inf where Q_i is empty.
    P_i is hist[:i] with the clipped mass hist[i:] added to bin i-1; Q_i merges hist[:i] into `levels` groups
    (bin j into group floor(levels * j / i)) and spreads each group's mass over its non-empty bins. Written
    with prefix sums so that one threshold costs O(levels), not O(i): with N the total count and S_i the mass
    below i, KL = (sum p log p - sum p log q) / N - log N with q normalized by S_i (and floored at 1e-12, as
    the per-threshold form does); every bin of a group shares its q, so sum h log q is a sum over groups. The
    exhaustive search took 20 s for the 118 tensors of DeepLabv3+ MobileNetV2 one threshold at a time."""
    total = float(hist.sum())
    mass_below = np.concatenate(([0.0], np.cumsum(hist)))
    filled_below = np.concatenate(([0], np.cumsum(hist > 0)))
    hlogh = np.concatenate(([0.0], np.cumsum(hist * np.log(np.where(hist > 0, hist, 1.0)))))
    edges = -((-np.arange(levels + 1)[None, :] * thresholds[:, None]) // levels)  # ceil: each group's first bin
    group_mass = mass_below[edges[:, 1:]] - mass_below[edges[:, :-1]]
    group_filled = filled_below[edges[:, 1:]] - filled_below[edges[:, :-1]]
    kept = mass_below[thresholds]  # S_i
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(np.maximum(group_mass / np.maximum(group_filled, 1) / kept[:, None], 1e-12))
        cross = np.sum(np.where(group_mass > 0, group_mass * log_q, 0.0), axis=1)
        last, clipped = hist[thresholds - 1], total - kept
        last_log_q = np.where(last > 0, log_q[:, -1], np.log(1e-12))  # bin i-1 is in the last group
        cross += (clipped * last_log_q)  # the last bin of P holds the clipped mass too
        reference = last + clipped
        own = hlogh[thresholds - 1] + np.where(reference > 0, reference * np.log(np.where(reference > 0, reference,
                                                                                         1.0)), 0.0)
        divergence = (own - cross) / total - np.log(total)
    return np.where(kept > 0, divergence, np.inf)


TIE = 1e-12  # divergences this close are equal: summed in another order, an exact tie differs by ~1e-16


def _best_threshold(hist: np.ndarray, thresholds: range, levels: int, fallback: int) -> int:
    """The threshold of least KL divergence; the last one among equals, as NVIDIA's implementation."""
    candidates = np.arange(thresholds.start, thresholds.stop, thresholds.step)
    if candidates.size == 0:
        return fallback
    divergence = _divergences(hist, candidates, levels)
    if not np.isfinite(divergence).any():
        return fallback
    return int(candidates[np.flatnonzero(divergence <= divergence.min() + TIE)[-1]])


def entropy_amax(stats: TensorStats, options: Entropy) -> float:
    if stats.hist is None or stats.hist_range == 0.0:
        return stats.absmax
    hist = stats.hist.astype(np.float64)
    hist[0] = hist[1]  # the ReLU zeros (module docstring)
    bins = hist.size
    if int(np.count_nonzero(hist)) <= 1:
        return stats.absmax
    first = max(options.levels, options.start)
    best_i = _best_threshold(hist, range(first, bins + 1, options.stride), options.levels, bins)
    if options.stride > 1:  # refine around the coarse optimum
        low, high = max(first, best_i - options.stride + 1), min(bins, best_i + options.stride - 1)
        best_i = _best_threshold(hist, range(low, high + 1), options.levels, best_i)
    return min(stats.absmax, best_i * _bin_width(stats))


def _rounding_integral(x: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The integral of the squared rounding residual (x - step * round(x / step))^2 from -step/2 to x: a full
    period adds step^3 / 12, the partial one s^3 ((f - 1/2)^3 + 1/8) / 3 with f the position within it."""
    u = x / step + 0.5
    periods = np.floor(u)
    f = u - periods
    return step**3 * (periods / 12.0 + ((f - 0.5) ** 3 + 0.125) / 3.0)


def quantization_errors(hist: np.ndarray, width: float, thresholds: np.ndarray) -> np.ndarray:
    """Expected squared error of quantizing the histogrammed |x| to the symmetric INT8 grid of each amax in
    `thresholds` (in bins), values spread evenly within their bin: rounding below amax, clipping to it above.
    Exact per bin (the rounding residual's integral in closed form), so steps finer than a bin are not
    aliased as they are when each bin counts at its center."""
    low = np.arange(hist.size) * width
    high = low + width
    errors = np.empty(thresholds.size)
    for start in range(0, thresholds.size, 128):  # 128 candidates x BINS at a time: a few MB
        top = thresholds[start:start + 128, None] * width
        step = top / QMAX
        inside = np.minimum(high, top)
        rounding = np.where(low < top, _rounding_integral(inside, step) - _rounding_integral(low, step), 0.0)
        beyond = np.maximum(low, top)
        clipping = np.where(high > top, ((high - top) ** 3 - (beyond - top) ** 3) / 3.0, 0.0)
        errors[start:start + 128] = ((rounding + clipping) / width) @ hist
    return errors


def mse_amax(stats: TensorStats, options: Mse) -> float:
    if stats.hist is None or stats.hist_range == 0.0:
        return stats.absmax
    hist, bins = stats.hist.astype(np.float64), stats.hist.size
    hist[0] = hist[1]  # exact zeros (a ReLU's) quantize without error: count bin 0 like its neighbour
    width = _bin_width(stats)
    first = max(1, min(options.start, bins))
    coarse = np.arange(first, bins + 1, options.stride)
    best = int(coarse[int(np.argmin(quantization_errors(hist, width, coarse)))])
    if options.stride > 1:  # refine around the coarse optimum
        fine = np.arange(max(first, best - options.stride + 1), min(bins, best + options.stride - 1) + 1)
        best = int(fine[int(np.argmin(quantization_errors(hist, width, fine)))])
    return min(stats.absmax, best * width)


def amax(stats: TensorStats, method: Method) -> float:
    """The symmetric range of one tensor under `method` (0.0 for a tensor that was always zero)."""
    if isinstance(method, MinMax):
        return stats.absmax
    if isinstance(method, Percentile):
        return percentile_amax(stats, method.percentile)
    if isinstance(method, Mse):
        return mse_amax(stats, method)
    return entropy_amax(stats, method)
