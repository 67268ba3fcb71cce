"""Per-class damage: IoU, shares, worst classes and the boundary/interior split on small maps checked by hand,
and on a real zoo model against the task metrics (metrics.scores.Scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deploykit.errors import ParityError
from deploykit.evaluate import session_from_onnx
from deploykit.metrics.scores import Scores
from deploykit.metrics.tasks import segmentation_labels
from deploykit.parity.classes import (
    ClassDamageResult,
    DamageAccumulator,
    boundary_band,
    class_damage,
    most_disagreeing,
    saliency_disagreement,
)
from deploykit.types import TASKS
from tests.parity.helpers import corrupted_copy


def _halves() -> tuple[np.ndarray, np.ndarray]:
    """4x8: class 0 in columns 0-3, class 1 in 4-7; the candidate flips column 4 (on the edge) and pixel (0, 7)
    (interior) to class 0."""
    reference = np.zeros((4, 8), dtype=np.int64)
    reference[:, 4:] = 1
    candidate = reference.copy()
    candidate[:, 4] = 0
    candidate[0, 7] = 0
    return reference, candidate


def test_band_holds_two_pixels_each_side_of_an_edge_and_not_the_image_border() -> None:
    reference, _ = _halves()
    band = boundary_band(reference)
    assert band.sum(axis=0).tolist() == [0, 0, 4, 4, 4, 4, 0, 0]
    assert not boundary_band(np.zeros((5, 5), dtype=np.int64)).any()
    assert boundary_band(reference, width=1).sum(axis=0).tolist() == [0, 0, 0, 4, 4, 0, 0, 0]


def test_band_around_a_single_pixel_is_a_5x5_square_without_corners() -> None:
    dot = np.zeros((7, 7), dtype=np.int64)
    dot[3, 3] = 2
    assert boundary_band(dot, width=1).sum() == 5  # the pixel and its 4 neighbours
    band = boundary_band(dot, width=2)
    assert band.sum() == 21
    assert band[1:6, 1:6].sum() == 21 and not band[1, 1] and not band[5, 5]


def test_iou_shares_and_boundary_split_by_hand() -> None:
    reference, candidate = _halves()
    result = class_damage(reference, {"int8": candidate})
    damage = result.candidates[0]
    zero, one = damage.classes
    assert (zero.intersection, zero.union, zero.reference_pixels, zero.candidate_pixels) == (16, 21, 16, 21)
    assert zero.iou == pytest.approx(16 / 21) and one.iou == pytest.approx(11 / 16)
    assert zero.reference_share == 0.5 and zero.candidate_share == pytest.approx(21 / 32)
    assert one.candidate_share == pytest.approx(11 / 32)
    assert damage.pixel_agreement == pytest.approx(27 / 32)
    assert damage.miou == pytest.approx((16 / 21 + 11 / 16) / 2)
    split = damage.boundary
    assert split is not None
    assert (split.disagreeing, split.on_boundary, split.band, split.pixels) == (5, 4, 16, 32)
    assert split.boundary_share == pytest.approx(0.8) and split.band_share == 0.5
    assert split.boundary_rate == pytest.approx(4 / 16) and split.interior_rate == pytest.approx(1 / 16)
    assert damage.worst(1) == ((1, pytest.approx(5 / 16)),)
    assert [k for k, _ in damage.worst()] == [1, 0]
    assert result.disagreement == ((5 / 32,),)


def test_a_class_the_candidate_invents_is_not_among_the_losers() -> None:
    reference, candidate = _halves()
    candidate[3, 7] = 9
    damage = class_damage(reference, {"int8": candidate}).candidates[0]
    assert damage.iou(9) == 0.0 and damage.losses()[9] == 1.0
    assert [k for k, _ in damage.worst()] == [1, 0]


def test_identical_maps_lose_nothing() -> None:
    reference, _ = _halves()
    damage = class_damage(reference, {"fp32": reference}).candidates[0]
    assert damage.worst() == () and damage.miou == 1.0 and damage.pixel_agreement == 1.0
    assert damage.boundary is not None and damage.boundary.boundary_share == 0.0
    assert most_disagreeing(class_damage(reference, {"fp32": reference}).disagreement) == ()


def test_ground_truth_ignores_void_and_losses_are_relative_to_the_reference() -> None:
    truth = np.array([[0, 0, 1, 255]])
    reference = np.array([[0, 0, 1, 1]])
    candidate = np.array([[0, 1, 1, 1]])
    result = class_damage(reference, {"int8": candidate}, ground_truth=truth)
    baseline, scored = result.labels
    assert baseline.label == "reference" and scored.label == "int8" and scored.against == "labels"
    assert baseline.pixels == 3 and baseline.miou == 1.0 and baseline.boundary is None
    assert scored.iou(0) == 0.5 and scored.iou(1) == 0.5 and scored.pixel_agreement == pytest.approx(2 / 3)
    assert result.baseline() is baseline
    # equal losses of 0.5: class 0 first, it has more ground-truth pixels
    assert scored.worst(baseline=baseline) == ((0, 0.5), (1, 0.5))
    assert class_damage(reference, {"int8": candidate}).labels == ()


def test_streamed_inputs_add_up_and_round_trip_through_json() -> None:
    reference, candidate = _halves()
    accumulator = DamageAccumulator(["fp16", "int8"])
    accumulator.add(reference, [reference, candidate])
    accumulator.add(np.stack([candidate, reference]), [np.stack([candidate, reference]),
                                                       np.stack([reference, candidate])])
    result = accumulator.result()
    assert result.disagreement == ((0.0, 5 / 32), (0.0, 5 / 32), (0.0, 5 / 32))
    fp16, int8 = result.candidates
    assert fp16.boundary is not None and fp16.boundary.disagreeing == 0 and fp16.pixel_agreement == 1.0
    assert int8.boundary is not None and int8.boundary.disagreeing == 15 and int8.pixels == 96
    assert int8.boundary.band == 16 + int(boundary_band(candidate).sum()) + 16
    again = ClassDamageResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_most_disagreeing_ranks_by_the_worst_candidate_then_the_mean() -> None:
    rows = [[0, 0], [0.1, 0.0], [0.05, 0.2], [0.1, 0.05], [0.3, 0], [0.01, 0.01]]
    assert most_disagreeing(rows) == (4, 2, 3, 1)
    assert most_disagreeing(rows, 2) == (4, 2)


def test_bad_maps_fail_clearly() -> None:
    reference, candidate = _halves()
    with pytest.raises(ParityError, match="integer labels"):
        class_damage(reference.astype(np.float32), {"x": candidate})
    with pytest.raises(ParityError, match="shape"):
        class_damage(reference, {"x": candidate[:, :4]})
    accumulator = DamageAccumulator(["x"])
    accumulator.add(reference, [candidate], reference)
    with pytest.raises(ParityError, match="every input or for none"):
        accumulator.add(reference, [candidate])


def test_saliency_disagreement_is_scaled_by_the_reference_range() -> None:
    reference = np.array([[0.0, 2.0], [0.0, 2.0]])
    assert saliency_disagreement(reference, reference + 0.5) == pytest.approx(0.25)
    assert saliency_disagreement(reference, reference) == 0.0


def test_real_zoo_model_agrees_with_the_task_metrics(zoo_onnx: Path, astronaut_65: np.ndarray,
                                                     tmp_path: Path) -> None:
    """A corrupted Conv in the tiny zoo model, run in ONNX Runtime: pixel agreement and mIoU equal the parity
    metrics', and the split accounts for every disagreeing pixel."""
    bad, _ = corrupted_copy(zoo_onnx, tmp_path / "bad.onnx", factor=3.0)
    good_session, bad_session = session_from_onnx(zoo_onnx), session_from_onnx(bad)
    name = good_session.get_inputs()[0].name
    inputs = [astronaut_65, astronaut_65[:, :, ::-1].copy()]
    accumulator, task = DamageAccumulator(["bad"]), Scores(TASKS["segmentation"], numeric=False)
    for x in inputs:
        ref, cand = good_session.run(None, {name: x})[0], bad_session.run(None, {name: x})[0]
        accumulator.add(segmentation_labels(ref), [segmentation_labels(cand)])
        task.add(ref, cand)
    damage, expected = accumulator.result().candidates[0], task.result()
    assert damage.pixel_agreement == pytest.approx(expected["pixel_agreement"])
    assert damage.miou == pytest.approx(expected["miou"])
    assert damage.boundary is not None and damage.boundary.disagreeing > 0
    assert damage.boundary.on_boundary <= damage.boundary.disagreeing
    assert damage.worst() and all(loss > 0 for _, loss in damage.worst())
