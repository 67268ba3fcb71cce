"""What parity keeps for the pictures: the most disagreeing inputs, compact maps, an .npz round trip, and a real
zoo model's outputs drawn by report.masks."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deploykit.errors import DiskFull, OutputExists
from deploykit.evaluate import session_from_onnx
from deploykit.io.images import preprocess, sample_photographs
from deploykit.parity.pictured import PictureKeeper, Pictures, image_from_input
from deploykit.report.masks import INTERIOR_FLIP, pictures_png
from deploykit.types import IMAGENET, TASKS, Preprocessing
from tests.io.faults import full_disk_at_write
from tests.parity.helpers import corrupted_copy


def _scores(labels: np.ndarray, classes: int = 3) -> np.ndarray:
    """N,H,W labels -> N,C,H,W one-hot scores whose argmax is `labels`."""
    return np.moveaxis(np.eye(classes, dtype=np.float32)[labels], -1, 1)


def _flipped(count: int) -> np.ndarray:
    labels = np.zeros((1, 4, 5), dtype=np.int64)
    labels.reshape(-1)[:count] = 2
    return labels


def test_keeper_keeps_the_most_disagreeing_inputs_in_order() -> None:
    keeper = PictureKeeper(TASKS["segmentation"], ["fp16", "int8"], IMAGENET, count=2)
    x = np.zeros((1, 3, 4, 5), dtype=np.float32)
    reference = _scores(_flipped(0))
    flips = [(0, 0), (1, 3), (0, 5), (4, 4), (2, 0)]  # (fp16, int8) pixels flipped per input
    for index, (a, b) in enumerate(flips):
        keeper.offer(index, x, reference, [_scores(_flipped(a)), _scores(_flipped(b))])
    pictures = keeper.result()
    assert [p.index for p in pictures.inputs] == [2, 3]  # worst 5 px; then 4 px with mean 4 beats 3 px
    first = pictures.inputs[0]
    assert first.disagreement == (0.0, 0.25)
    assert first.reference.dtype == np.uint8 and first.candidates[1].sum() == 2 * 5
    assert first.image.shape == (4, 5, 3) and first.image.dtype == np.uint8
    from_maps = PictureKeeper(TASKS["segmentation"], ["fp16", "int8"], IMAGENET, count=2)
    for index, (a, b) in enumerate(flips):
        from_maps.offer(index, x, _flipped(0), [_flipped(a), _flipped(b)])
    assert [p.index for p in from_maps.result().inputs] == [2, 3]
    assert np.array_equal(from_maps.result().inputs[0].candidates[1], first.candidates[1])


def test_keeper_skips_inputs_without_disagreement_and_reads_batches() -> None:
    keeper = PictureKeeper(TASKS["saliency"], ["fp16"], None)
    reference = np.zeros((2, 1, 4, 4), dtype=np.float32)
    reference[:, :, 0, 0] = 1.0
    candidate = reference.copy()
    candidate[1, 0, 1, 1] = 0.5
    keeper.offer(10, np.random.default_rng(0).standard_normal((2, 3, 4, 4)), reference, [candidate])
    pictures = keeper.result()
    assert [p.index for p in pictures.inputs] == [11]
    assert pictures.inputs[0].reference.dtype == np.float32
    assert pictures.inputs[0].disagreement == (pytest.approx(0.5 / 16),)


def test_pictures_round_trip_through_npz(tmp_path: Path) -> None:
    keeper = PictureKeeper(TASKS["segmentation"], ["int8"], IMAGENET)
    keeper.offer(0, np.zeros((1, 3, 4, 5), np.float32), _scores(_flipped(0)), [_scores(_flipped(3))])
    pictures = keeper.result()
    path = pictures.save(tmp_path / "pictures.npz", force=False)
    with pytest.raises(OutputExists):
        pictures.save(path, force=False)
    again = Pictures.from_npz(path)
    assert again.task == "segmentation" and again.labels == ("int8",)
    (one,), (two,) = pictures.inputs, again.inputs
    assert one.index == two.index and one.disagreement == two.disagreement
    assert np.array_equal(one.image, two.image) and np.array_equal(one.candidates[0], two.candidates[0])
    assert two.reference.dtype == np.uint8


def test_a_full_disk_while_saving_says_so_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's ZipFile, left open by a failed write, was closed by the garbage collector after its file: an
    "Exception ignored ... seek of closed file" traceback under deploy's one line (a full tmpfs)."""
    keeper = PictureKeeper(TASKS["segmentation"], ["int8"], IMAGENET)
    keeper.offer(0, np.zeros((1, 3, 4, 5), np.float32), _scores(_flipped(0)), [_scores(_flipped(3))])
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with full_disk_at_write(1, monkeypatch, tmp_path), pytest.raises(DiskFull):
        keeper.result().save(tmp_path / "pictures.npz", force=False)
    gc.collect()
    assert not unraisable and not list(tmp_path.iterdir())


def test_image_from_input_undoes_preprocessing_of_a_real_photograph() -> None:
    photo = sample_photographs(("astronaut",))[0][:64, :96]
    back = image_from_input(preprocess(photo, IMAGENET, (64, 96)), IMAGENET)
    assert back.shape == photo.shape and np.abs(back.astype(int) - photo).max() <= 1
    caffe = Preprocessing(mean=(103.9, 116.8, 123.7), std=(1.0, 1.0, 1.0), channel_order="BGR",
                          input_range=(0.0, 255.0))
    assert np.abs(image_from_input(preprocess(photo, caffe, (64, 96)), caffe).astype(int) - photo).max() <= 1
    unknown = image_from_input(preprocess(photo, IMAGENET, (64, 96)), None)
    assert unknown.shape == photo.shape and unknown.min() == 0 and unknown.max() == 255


def test_real_zoo_outputs_are_kept_and_drawn(zoo_onnx: Path, tmp_path: Path) -> None:
    """The tiny zoo model and a copy with one corrupted Conv, in ONNX Runtime, on three photographs: the kept
    inputs are drawn, and the difference panel shows flips."""
    bad, _ = corrupted_copy(zoo_onnx, tmp_path / "bad.onnx", factor=3.0)
    good_session, bad_session = session_from_onnx(zoo_onnx), session_from_onnx(bad)
    name = good_session.get_inputs()[0].name
    keeper = PictureKeeper(TASKS["segmentation"], ["bad"], IMAGENET, count=2)
    for index, photo in enumerate(sample_photographs(("astronaut", "coffee", "chelsea"))):
        x = preprocess(photo, IMAGENET, (65, 65))
        keeper.offer(index, x, good_session.run(None, {name: x})[0], [bad_session.run(None, {name: x})[0]])
    pictures = keeper.result()
    assert len(pictures.inputs) == 2 and pictures.inputs[0].disagreement >= pictures.inputs[1].disagreement
    out = tmp_path / "masks.png"
    out.write_bytes(pictures_png(pictures, panel=65))
    with Image.open(out) as image:
        drawn = np.asarray(image.convert("RGB"))
    assert np.all(drawn == INTERIOR_FLIP, axis=2).any()
