"""Numeric metrics between a reference output and a candidate output of the same shape.

Definitions (r = reference, c = candidate, both flattened, float64):
- max_abs = max |c - r|;  mean_abs = mean |c - r|;  p99_abs = 99th percentile of |c - r| (linear interpolation).
- max_rel = max |c - r| / max(|r|, eps) with eps = 1e-6 * max|r| + 1e-12 (so near-zero references do not explode).
- cosine = <r, c> / (|r| |c|), kept within [-1, 1] (rounding alone gives identical outputs 1.0000000000000002);
  1.0 when both are all zeros, 0.0 when exactly one is.
- snr_db = 10 log10(sum r^2 / sum (c - r)^2); +inf when identical, -inf for a non-finite candidate.
- beyond_tol = share of elements with |c - r| > atol + rtol * |r| (numpy.isclose's rule).
- nan / inf = counts in the candidate (a non-finite candidate fails every verdict).

Over several inputs (each METRICS entry's `aggregate`, inputs of equal size): max_abs, p99_abs, max_rel, nan,
inf take the worst input (max, or sum for the counts); cosine and snr_db the worst input (min); mean_abs and
beyond_tol the mean over inputs, which equals the value over all elements because the inputs have the same size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deploykit.errors import ParityError

# Memory a comparison of one output value holds: the float64 arrays `numeric_metrics` makes (the reference's
# values, tolerances and floors, kept for every candidate, and one candidate's values, differences and relative
# differences: 48 bytes), and each side's output as float32 (4 bytes a side). Measured: parity of the tiny test
# model with itself at 8192x3x64x64 had a resident set of 9.2 GB; deploykit.parity.memory counts 9.8 GB.
COMPARED_BYTES = 48
OUTPUT_BYTES = 4


@dataclass(frozen=True)
class NumericMetrics:
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    cosine: float
    snr_db: float
    beyond_tol: float
    nan: int
    inf: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReferenceSide:
    """What numeric_metrics derives from the reference alone (flat float64 arrays), kept when one reference is
    compared with several candidates (parity): about 40% of a call's work."""

    values: np.ndarray  # r
    tolerance: np.ndarray  # atol + rtol * |r|: beyond_tol's bound
    floor: np.ndarray  # max(|r|, eps): max_rel's denominator
    signal: float  # sum r^2
    atol: float
    rtol: float


def reference_side(reference: np.ndarray, *, atol: float = 1e-4, rtol: float = 1e-3) -> ReferenceSide:
    r = np.asarray(reference, dtype=np.float64).ravel()
    ref_abs = np.abs(r)
    eps = 1e-6 * float(ref_abs.max(initial=0.0)) + 1e-12
    tolerance = np.multiply(ref_abs, rtol)
    tolerance += atol
    np.maximum(ref_abs, eps, out=ref_abs)
    return ReferenceSide(r, tolerance, ref_abs, float(np.dot(r, r)), atol, rtol)


def numeric_metrics(reference: np.ndarray, candidate: np.ndarray, *, atol: float = 1e-4,
                    rtol: float = 1e-3, prepared: ReferenceSide | None = None) -> NumericMetrics:
    """See the module docstring. Written for few passes over the data, in place where it can: a 21-class
    513x513 output is 5.5 M values, and the first version (one temporary per term) took 0.3 s per call, 148 s
    of the demo deploy's budget search and a sixth of its parity step (cProfile). `prepared`: the reference's
    side (reference_side with the same atol and rtol), when it was derived already."""
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: reference {list(reference.shape)}, candidate {list(candidate.shape)}")
    c = np.asarray(candidate, dtype=np.float64).ravel()
    if c.size == 0:
        nan, inf = int(np.isnan(c).sum()), int(np.isinf(c).sum())
        return NumericMetrics(0.0, 0.0, 0.0, 0.0, 1.0, math.inf, 0.0, nan, inf)
    side = prepared or reference_side(reference, atol=atol, rtol=rtol)
    if (side.atol, side.rtol) != (atol, rtol) or side.values.size != c.size:
        raise ValueError("the prepared reference side was derived for another reference or tolerance")
    r, signal = side.values, side.signal
    finite = np.isfinite(c)
    all_finite = bool(finite.all())
    nan, inf = (0, 0) if all_finite else (int(np.isnan(c).sum()), int(np.isinf(c).sum()))
    diff = np.subtract(c, r)
    np.abs(diff, out=diff)
    if not all_finite:
        diff[~finite] = np.inf
    norm_r = math.sqrt(signal)
    norm_c = math.sqrt(float(np.dot(c, c))) if all_finite else (
        float(np.linalg.norm(c[finite])) if finite.any() else 0.0)
    if not all_finite:
        cosine = float("nan")
    elif norm_r == 0.0 and norm_c == 0.0:
        cosine = 1.0
    elif norm_r == 0.0 or norm_c == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.clip(np.dot(r, c) / (norm_r * norm_c), -1.0, 1.0))  # docstring: rounding
    noise = float(np.dot(diff, diff)) if all_finite else math.inf
    if noise == 0.0:
        snr = math.inf
    elif signal == 0.0 or math.isinf(noise):
        snr = -math.inf
    else:
        snr = 10 * math.log10(signal / noise)
    beyond = float(np.count_nonzero(diff > side.tolerance) / diff.size)
    relative = np.divide(diff, side.floor)
    return NumericMetrics(
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        p99_abs=high_percentile(diff, 99) if all_finite else math.inf,
        max_rel=float(relative.max()),
        cosine=cosine,
        snr_db=snr,
        beyond_tol=beyond,
        nan=nan,
        inf=inf,
    )


SAMPLE_STRIDE = 61  # every 61st value: a sample of a 5.5 M-value output is 90 k values (prime: no row alignment)


def high_percentile(values: np.ndarray, q: float) -> float:
    """np.percentile(values, q) (linear interpolation between the two order statistics around rank
    q/100 * (n - 1)) of a flat array, for q near 100, without partitioning the whole array: the two order
    statistics are among the values at or above a threshold taken from a sample a little below q, which is
    checked (enough values at or above it) and else the whole array is used. np.percentile partitions a copy of
    all 5.5 M values of a 21-class 513x513 output, 0.1 s per call and a quarter of the demo's parity step."""
    count = values.size
    position = q / 100 * (count - 1)
    low = int(position)
    high = min(low + 1, count - 1)
    sample = values[::SAMPLE_STRIDE]
    if sample.size < 1000:
        return float(np.percentile(values, q))
    rank = int(sample.size * max(0.0, q / 100 - 0.005))  # half a percent below q: rarely too high
    threshold = np.partition(sample, rank)[rank]
    top = values[values >= threshold]
    below = count - top.size  # values under the threshold, all of lower rank than `low` when the check holds
    if below > low:
        return float(np.percentile(values, q))
    ordered = np.partition(top, (low - below, high - below))
    lower, upper = float(ordered[low - below]), float(ordered[high - below])
    return lower + (upper - lower) * (position - low)
