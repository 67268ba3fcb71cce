"""NSS with fixations derived from a reference map that has a plateau (a saturated or min-max-normalised map):
ties are shared, not broken by raster position."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.metrics.scores import task_metrics
from deploykit.metrics.tasks import FIXATION_FRACTION, fixations_from_reference, nss


def plateau_map() -> np.ndarray:
    """50x50: a smooth ramp below 0.5 and a 10x10 plateau at 1.0 (100 pixels; 2% of the map is 50)."""
    y, x = np.mgrid[0:50, 0:50]
    ref = 0.5 * (x + y) / 100.0
    ref[20:30, 20:30] = 1.0
    return ref


@pytest.mark.parametrize("lost", ["first half", "second half"])
def test_a_candidate_losing_part_of_a_plateau_does_not_beat_the_reference(lost: str) -> None:
    ref = plateau_map()
    cand = ref.copy()
    rows = slice(20, 25) if lost == "first half" else slice(25, 30)
    cand[rows, 20:30] = 0.9
    fixations = fixations_from_reference(ref)
    assert nss(cand, fixations) < nss(ref, fixations)
    ratio = task_metrics("saliency", ref[None], cand[None])["nss_ratio"]
    assert ratio < 1.0
    # The rule this replaces, ties by raster position, took the plateau's first 50 pixels: a candidate that
    # lost the second half then scored above the reference.
    by_position = np.zeros(ref.size, dtype=bool)
    by_position[np.argsort(-ref.ravel(), kind="stable")[:50]] = True
    if lost == "second half":
        assert nss(cand, by_position.reshape(ref.shape)) > nss(ref, by_position.reshape(ref.shape))


def test_tie_breaking_is_deterministic_and_ignores_position() -> None:
    ref = plateau_map()
    cand = ref + 0.01 * np.sin(np.arange(ref.size)).reshape(ref.shape)
    weights = fixations_from_reference(ref)
    assert weights.sum() == pytest.approx(round(FIXATION_FRACTION * ref.size))
    assert np.allclose(weights[20:30, 20:30], 0.5) and weights.sum() == pytest.approx(weights[20:30, 20:30].sum())
    flipped = nss(cand[::-1, ::-1], fixations_from_reference(ref[::-1, ::-1]))
    assert flipped == pytest.approx(nss(cand, weights), rel=1e-12)
    assert nss(cand, weights) == nss(cand, fixations_from_reference(ref))


def test_distinct_values_still_give_a_binary_top_two_percent() -> None:
    ref = np.arange(100.0).reshape(10, 10)
    weights = fixations_from_reference(ref)
    assert weights.sum() == 2 and weights[9, 9] == 1 and weights[9, 8] == 1
    assert set(np.unique(weights)) == {0.0, 1.0}
    assert nss(ref, weights) == nss(ref, weights.astype(bool))
