"""Numeric metrics between a reference output and a candidate output of the same shape.

Definitions (r = reference, c = candidate, both flattened, float64):
- max_abs = max |c - r|;  mean_abs = mean |c - r|;  p99_abs = 99th percentile of |c - r| (linear interpolation).
- max_rel = max |c - r| / max(|r|, eps) with eps = 1e-6 * max|r| + 1e-12 (so near-zero references do not explode).
- cosine = <r, c> / (|r| |c|); 1.0 when both are all zeros, 0.0 when exactly one is.
- snr_db = 10 log10(sum r^2 / sum (c - r)^2); +inf when identical.
- beyond_tol = share of elements with |c - r| > atol + rtol * |r| (numpy.isclose's rule).
- nan / inf = counts in the candidate (a non-finite candidate fails every verdict).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deploykit.errors import ParityError


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


def numeric_metrics(reference: np.ndarray, candidate: np.ndarray, *, atol: float = 1e-4,
                    rtol: float = 1e-3) -> NumericMetrics:
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: reference {list(reference.shape)}, candidate {list(candidate.shape)}")
    r = reference.astype(np.float64).ravel()
    c = candidate.astype(np.float64).ravel()
    nan, inf = int(np.isnan(c).sum()), int(np.isinf(c).sum())
    if r.size == 0:
        return NumericMetrics(0.0, 0.0, 0.0, 0.0, 1.0, math.inf, 0.0, nan, inf)
    finite = np.isfinite(c)
    diff = np.where(finite, np.abs(c - r), np.inf)
    ref_abs = np.abs(r)
    eps = 1e-6 * float(ref_abs.max()) + 1e-12
    norm_r, norm_c = float(np.linalg.norm(r)), float(np.linalg.norm(c[finite])) if finite.any() else 0.0
    if not finite.all():
        cosine = float("nan")
    elif norm_r == 0.0 and norm_c == 0.0:
        cosine = 1.0
    elif norm_r == 0.0 or norm_c == 0.0:
        cosine = 0.0
    else:
        cosine = float(np.dot(r, c) / (norm_r * norm_c))
    noise = float(np.sum(diff**2)) if finite.all() else math.inf
    signal = float(np.sum(r**2))
    snr = math.inf if noise == 0.0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return NumericMetrics(
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        p99_abs=float(np.percentile(diff, 99)) if finite.all() else math.inf,
        max_rel=float((diff / np.maximum(ref_abs, eps)).max()),
        cosine=cosine,
        snr_db=snr,
        beyond_tol=float(np.mean(diff > atol + rtol * ref_abs)),
        nan=nan,
        inf=inf,
    )
