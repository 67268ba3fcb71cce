"""What a parity run keeps for the report (issue 13, items 2-3): per-class damage and pictures, from the same pass."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from deploykit.io.images import preprocess, sample_photographs
from deploykit.metrics import pair, tasks
from deploykit.metrics.numeric import numeric_metrics
from deploykit.parity.compare import ParityResult, ParitySettings, _Kept, compare
from deploykit.parity.inputs import InputSet
from deploykit.targets.resolve import open_target
from deploykit.types import TASKS
from deploykit.zoo import get_model_spec
from tests.fixtures.tiny import TINY
from tests.parity.helpers import ZOO_MODEL, corrupted_copy, zoo_target


def test_segmentation_run_keeps_class_damage_and_the_most_disagreeing_pictures(zoo_onnx: Path,
                                                                                tmp_path: Path) -> None:
    spec = get_model_spec(ZOO_MODEL)
    size = TINY[spec.name].input_size
    images = np.concatenate([preprocess(p, spec.preprocessing, size) for p in sample_photographs()])
    bad, _ = corrupted_copy(zoo_onnx, tmp_path / "bad.onnx", factor=3.0)
    inputs = InputSet("photos", len(images), (1, *images.shape[1:]), lambda: iter(images[i:i + 1]
                                                                               for i in range(len(images))))
    result, _ = compare(zoo_target(), [open_target(str(zoo_onnx)), open_target(str(bad))], inputs,
                        ParitySettings())
    damage, pictures = result.class_damage, result.pictures
    assert damage is not None and pictures is not None
    assert len(damage.disagreement) == len(images)
    for candidate, measured in zip(damage.candidates, result.candidates, strict=True):
        assert candidate.pixel_agreement == pytest.approx(measured.outputs[0].metrics["pixel_agreement"])
    assert tuple(p.index for p in pictures.inputs) == damage.most_disagreeing()
    assert pictures.inputs[0].image.dtype == np.uint8 and pictures.inputs[0].image.shape[-1] == 3
    again = ParityResult.from_dict(result.to_dict())
    assert again.class_damage == damage and again.pictures is None  # pictures travel as an .npz, not JSON
    pictures.save(tmp_path / "pictures.npz", force=False)
    again.pictures_file = "pictures.npz"
    again.load_pictures(tmp_path)
    assert again.pictures is not None and again.pictures.labels == pictures.labels


def test_each_output_is_argmaxed_once_per_input(zoo_onnx: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's label map serves every candidate's scores, the class damage and the pictures; each
    candidate's serves its scores and the pictures: one argmax per output and input, the same figures."""
    spec = get_model_spec(ZOO_MODEL)
    images = np.concatenate([preprocess(p, spec.preprocessing, TINY[spec.name].input_size)
                             for p in sample_photographs()[:3]])
    inputs = InputSet("photos", len(images), (1, *images.shape[1:]), lambda: iter(images[i:i + 1]
                                                                               for i in range(len(images))))
    bad, _ = corrupted_copy(zoo_onnx, tmp_path / "bad.onnx", factor=3.0)
    candidates = [open_target(str(zoo_onnx)), open_target(str(bad))]
    first, _ = compare(zoo_target(), candidates, inputs, ParitySettings())
    taken: list[tuple[int, ...]] = []
    argmax = tasks.segmentation_labels
    monkeypatch.setattr(tasks, "segmentation_labels", lambda output: taken.append(output.shape) or argmax(output))
    sides: list[tuple[int, ...]] = []
    derive = pair.reference_side
    monkeypatch.setattr(pair, "reference_side", lambda r, **kw: sides.append(r.shape) or derive(r, **kw))
    again, _ = compare(zoo_target(), candidates, inputs, ParitySettings())
    assert len(taken) == len(images) * (1 + len(candidates))
    assert len(sides) == len(images)  # the reference's side of the numeric metrics, once per input
    assert again.to_dict() == first.to_dict()


def test_shared_derivations_are_kept_by_identity() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    shared = pair.Shared()
    assert shared.labels(scores) is shared.labels(scores)
    assert np.array_equal(shared.labels(scores), tasks.class_labels(scores))
    assert shared.labels(scores.copy()) is not shared.labels(scores)  # equal values, another array: again
    side = shared.reference_side(scores, 1e-4, 1e-3)
    assert shared.reference_side(scores, 1e-4, 1e-3) is side
    assert shared.reference_side(scores, 1e-3, 1e-3) is not side  # another tolerance
    candidate = scores + rng.standard_normal(scores.shape).astype(np.float32) * 1e-3
    assert numeric_metrics(scores, candidate, prepared=side) == numeric_metrics(scores, candidate)
    with pytest.raises(ValueError, match="another reference or tolerance"):
        numeric_metrics(scores, candidate, atol=1e-2, prepared=side)


def _target(label: str) -> Any:
    return SimpleNamespace(label=label, preprocessing=None, metadata=None)


def test_saliency_keeps_pictures_but_no_class_damage() -> None:
    kept = _Kept(TASKS["saliency"], _target("torch"), [_target("fp16")])
    tally = SimpleNamespace(pairs=[("map", "saliency")])
    rng = np.random.default_rng(0)
    for index in range(6):
        reference = rng.random((1, 1, 8, 8)).astype(np.float32)
        candidate = reference + np.float32(0.01 * index)
        kept.add(index, rng.random((1, 3, 8, 8)).astype(np.float32), {"map": reference},
                 [{"saliency": candidate}], [tally])  # type: ignore[list-item]
    damage, pictures, names = kept.result()
    assert damage is None and names is None and pictures is not None
    assert [p.index for p in pictures.inputs] == [5, 4, 3, 2]  # the most disagreeing, most first
