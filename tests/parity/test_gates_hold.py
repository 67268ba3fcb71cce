"""Gates that hold (issue 12, item 3): one stray pixel fails no default gate; miou_major's share; ground truth
(--labels): miou_gt, miou_drop in points, masks matched by name and checked before any model runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deploykit.cli import cli
from deploykit.errors import InputError
from deploykit.io.labels import match_labels, read_mask
from deploykit.metrics.numeric import numeric_metrics
from deploykit.metrics.scores import Scores, task_metrics
from deploykit.metrics.tasks import MAJOR_CLASS_SHARE, resize_mask
from deploykit.parity.gates import evaluate, gates_for
from deploykit.precision.table import PRECISIONS
from deploykit.types import TASKS
from tests.fixtures.precision_models import photo_folder
from tests.parity.helpers import USER_MODEL, corrupted_copy


def _scene(size: int = 128) -> np.ndarray:
    """1,6,H,W logits of three large classes (0, 1, 2) and three the scene never has (3, 4, 5)."""
    rng = np.random.default_rng(0)
    labels = np.zeros((size, size), np.int64)
    labels[:, size // 3:] = 1
    labels[size // 2:, 2 * size // 3:] = 2
    logits = rng.normal(0.0, 0.5, (6, size, size)).astype(np.float32)
    rows, cols = np.indices(labels.shape)
    logits[labels, rows, cols] += 4.0
    return logits[None]


def _all_metrics(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    return {**numeric_metrics(reference, candidate).to_dict(), **task_metrics("segmentation", reference, candidate)}


def test_one_stray_pixel_of_an_unseen_class_fails_no_default_gate() -> None:
    reference = _scene()
    winner = float(reference[0, :, 10, 10].max())
    reference[0, 5, 10, 10] = winner - 0.005  # a near-tie, as at class boundaries: the runner-up is close
    candidate = reference.copy()
    candidate[0, 5, 10, 10] = winner + 0.005  # flips that one pixel to class 5, which the reference never has
    got = _all_metrics(reference, candidate)
    assert got["pixel_agreement"] == pytest.approx(1 - 1 / 128**2)
    assert got["miou"] == pytest.approx(0.75, abs=1e-3)  # class 5 scores 0 among four classes: would fail 0.85
    assert got["miou_major"] > 0.9999
    for precision in PRECISIONS:
        failed = [c.describe() for c in evaluate(gates_for(precision), "out", got) if not c.passed]
        assert failed == [], (precision, failed)


def test_a_real_loss_on_a_large_class_still_fails() -> None:
    reference = _scene()
    candidate = reference.copy()
    candidate[0, 3, :40, :40] += 10.0  # a 40x40 blob (10% of the image) becomes class 3
    got = _all_metrics(reference, candidate)
    failed = {c.gate.metric for c in evaluate(gates_for("int8"), "out", got) if not c.passed}
    assert "pixel_agreement" in failed and got["pixel_agreement"] < 0.95


def test_miou_major_takes_the_classes_covering_the_share_of_the_reference() -> None:
    reference = np.zeros((1, 3, 10, 100), np.float32)  # 1000 pixels
    reference[0, 0] = 1.0
    reference[0, 1, 0, :9] = 2.0  # class 1: 9 pixels (0.9%, under the share)
    reference[0, 2, 1, :] = 2.0  # class 2: 100 pixels
    candidate = reference.copy()
    candidate[0, 0, 0, :9] = 3.0  # class 1 lost entirely
    got = task_metrics("segmentation", reference, candidate)
    assert MAJOR_CLASS_SHARE == 0.01
    assert got["miou"] == pytest.approx((891 / 900 + 0 + 1) / 3)
    assert got["miou_major"] == pytest.approx((891 / 900 + 1) / 2)


def test_miou_against_ground_truth_by_hand_ignores_255_and_resizes_by_nearest() -> None:
    scores = np.zeros((1, 3, 2, 2), np.float32)
    scores[0, 0, 0, :] = 1.0
    scores[0, 1, 1, 0] = 1.0
    scores[0, 2, 1, 1] = 1.0  # predicted labels 0 0 / 1 2
    truth = np.array([[0, 1], [1, 255]])  # the 255 pixel is not scored
    def miou_gt(masks: np.ndarray) -> float:
        accumulator = Scores(TASKS["segmentation"], numeric=False, truth=True, names=("miou_gt",))
        accumulator.add(scores, scores, masks)
        return accumulator.result()["miou_gt"]

    # class 0: I 1, U 2; class 1: I 1, U 2; class 2 never appears on a scored pixel
    assert miou_gt(truth) == pytest.approx(0.5)
    big = np.kron(truth, np.ones((3, 3), np.int64))
    assert np.array_equal(resize_mask(big, (2, 2)), truth)
    assert miou_gt(big) == pytest.approx(0.5)


def _masks(images: Path, out: Path) -> Path:
    """Ground truth for each image: stripes of classes 0-2 with a 255 border (arbitrary, but fixed)."""
    out.mkdir()
    for image in sorted(images.glob("*.png")):
        with Image.open(image) as opened:
            w, h = opened.size
        mask = (np.arange(w)[None, :].repeat(h, 0) * 3 // w).astype(np.uint8)
        mask[:2], mask[-2:] = 255, 255
        Image.fromarray(mask, mode="L").save(out / image.name)
    return out


def test_match_labels_names_the_first_image_without_a_mask(tmp_path: Path) -> None:
    images = photo_folder(tmp_path / "images", count=2)
    labels = _masks(images, tmp_path / "labels")
    found = match_labels(labels, sorted(images.glob("*.png")))
    assert read_mask(found.masks[0]).max() == 255
    (labels / "calib_01.png").unlink()
    with pytest.raises(InputError, match=r"no mask calib_01\.png for input image calib_01\.png"):
        match_labels(labels, sorted(images.glob("*.png")))
    Image.new("RGB", (4, 4)).save(labels / "calib_01.png")
    with pytest.raises(InputError, match="is a RGB image"):
        read_mask(labels / "calib_01.png")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("labelled")
    images = photo_folder(root / "images", count=3, size=(64, 64))
    return images, _masks(images, root / "labels")


def test_parity_labels_reports_miou_gt_and_drop_and_gates_the_drop(labelled: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    import json

    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.targets.resolve import open_target

    images, labels = labelled
    target = open_target(USER_MODEL)
    assert target.loaded is not None
    clean = tmp_path / "tiny.onnx"
    assert onnx_from_torch(target.loaded, clean, input_shape=(1, 3, 64, 64), simplify=False).passed
    bad, _ = corrupted_copy(clean, tmp_path / "bad.onnx", factor=-3.0)
    base = ["parity", USER_MODEL, str(clean), str(bad), "--inputs", str(images), "--labels", str(labels),
            "--gate", "cosine>=-1", "--gate", "pixel_agreement>=0", "--gate", "miou_major>=0"]
    result = CliRunner().invoke(cli, [*base, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    reference_gt = data["reference_scores"]["output"]["miou_gt"]
    clean_out, bad_out = (c["outputs"][0]["metrics"] for c in data["candidates"])
    assert clean_out["miou_gt"] == pytest.approx(reference_gt, abs=1e-6) and abs(clean_out["miou_drop"]) < 1e-4
    assert bad_out["miou_drop"] == pytest.approx(100 * (reference_gt - bad_out["miou_gt"]))
    assert bad_out["miou_drop"] > 0.5
    gated = CliRunner().invoke(cli, [*base, "--gate", "miou_drop<=0.5"])
    assert gated.exit_code == 1
    assert "miou_drop" in gated.stderr.strip().splitlines()[-1] and "reference mIoU vs labels" in gated.stdout


def test_build_engine_budget_on_miou_drop_uses_the_labels_of_the_held_out_images(
        labelled: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.targets.resolve import open_target

    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    images, labels = labelled
    target = open_target(USER_MODEL)
    assert target.loaded is not None
    model = tmp_path / "tiny.onnx"
    assert onnx_from_torch(target.loaded, model, input_shape=(1, 3, 64, 64), simplify=False).passed
    args = ["build-engine", str(model), "--int8", "--calib-data", str(images), "--holdout", "1",
            "--accuracy-budget", "miou_drop<=0.5", "-o", str(tmp_path / "tiny.int8.ort.onnx")]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "add --labels" in refused.stderr
    result = CliRunner().invoke(cli, [*args, "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output
    budget = json.loads(result.stdout)["report"]["budget"]
    assert budget["budget"] == "miou_drop<=0.5" and budget["reached"]["miou_drop"] <= 0.5
