"""The verification tolerance's outlier rule: a few elements moved a little pass, a local bug does not."""

from __future__ import annotations

import numpy as np

from deploykit.export.results import Tolerance
from deploykit.metrics.numeric import numeric_metrics


def test_tolerance_accepts_rare_switch_flips_but_not_broad_errors() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(200_000).astype(np.float32)
    flipped = ref.copy()
    flipped[:5] += 3e-3  # five elements moved, as a flipped max-pool switch does
    broad = ref + 3e-4 * rng.standard_normal(ref.shape).astype(np.float32)
    tol = Tolerance()
    scale = float(np.abs(ref).max())
    assert tol.passes(numeric_metrics(ref, flipped, atol=tol.atol, rtol=tol.rtol), scale)
    assert not tol.passes(numeric_metrics(ref, broad, atol=tol.atol, rtol=tol.rtol), scale)


def test_a_zeroed_corner_fails_though_it_is_few_elements() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 21, 256, 256)).astype(np.float32)
    cand = ref.copy()
    cand[:, 0, :4, :4] = 0.0  # 16 elements, 1.2e-5 of the output: within the old count-only rule
    tol = Tolerance()
    metrics = numeric_metrics(ref, cand, atol=tol.atol, rtol=tol.rtol)
    scale = float(np.abs(ref).max())
    assert metrics.beyond_tol <= tol.max_outliers and metrics.cosine >= tol.min_cosine
    assert not tol.passes(metrics, scale)
    # Switch flips (a few elements moved by a little) still pass.
    flipped = ref.copy()
    flipped[:, 0, 10, 10:14] += 0.005 * scale
    assert tol.passes(numeric_metrics(ref, flipped, atol=tol.atol, rtol=tol.rtol), scale)
