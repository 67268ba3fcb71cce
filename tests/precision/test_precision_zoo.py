"""Every zoo model's FP16 and INT8 ONNX Runtime artifacts pass the parity task gates against FP32 on real
photographs (the parity helper's default gates, as `deploykit parity` applies them).

Tiny variants run in the default suite. Their weights are untrained: class scores are near ties that any
rounding flips, and a class covering two pixels weighs as much in mIoU as one covering the image. So their
builds use accuracy budgets (the user's flow for exactly this) with the four parity photographs as the held-out
share of the calibration folder: an untrained network does not carry a budget from one image to another,
and this measures it on the images the gates judge. Slow tests: the paper-size models (random weights, same
scheme), and the checkpoints trained by benchmarks/train_small.py, which calibrate and budget on generated
images and are judged on the photographs they never saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deploykit.build import build_artifact
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.parity.compare import ParitySettings, run_parity
from deploykit.parity.inputs import resolve_inputs
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import PRECISIONS
from deploykit.targets.resolve import open_target
from deploykit.zoo import get_model_spec, list_models
from deploykit.zoo.sources import load_model
from tests.fixtures.precision_models import photo_folder
from tests.fixtures.tiny import TINY

# The parity gates' task and cosine terms (deploykit/parity/gates.py), as budgets.
BUDGETS = {
    ("fp16", "segmentation"): ["pixel_agreement>=0.99", "miou_major>=0.95", "cosine>=0.999"],
    ("fp16", "saliency"): ["cc>=0.999", "sim>=0.99", "kld<=0.01", "cosine>=0.999"],
    ("int8", "segmentation"): ["pixel_agreement>=0.95", "miou_major>=0.85", "cosine>=0.98"],
    ("int8", "saliency"): ["cc>=0.98", "sim>=0.95", "kld<=0.05", "cosine>=0.98"],
}


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("zoo-calib"), count=6)


@pytest.fixture(scope="module")
def calib_with_parity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("zoo-calib-parity"), count=4, parity_photos=True)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))


def _check(name: str, options: dict[str, object], size: tuple[int, int], calib: Path, tmp_path: Path,
           holdout: int, weights: Path | None = None) -> None:
    spec = get_model_spec(name)
    loaded = load_model(name, options=options, weights=weights)
    source = tmp_path / f"{name}.onnx"
    assert onnx_from_torch(loaded, source, input_shape=(1, 3, *size), simplify=False).passed
    options = CalibrationOptions(data=str(calib), holdout=holdout)
    fp16 = build_artifact(source, tmp_path / f"{name}.fp16.ort.onnx", precision=PRECISIONS["fp16"], calibration=options,
                          accuracy_budget=BUDGETS[("fp16", spec.task)])
    int8 = build_artifact(source, tmp_path / f"{name}.int8.ort.onnx", precision=PRECISIONS["int8"], calibration=options,
                          accuracy_budget=BUDGETS[("int8", spec.task)])
    reference = open_target(str(source))
    candidates = [open_target(str(fp16.path)), open_target(str(int8.path))]
    result = run_parity(reference, candidates, resolve_inputs([reference, *candidates]), ParitySettings())
    assert [c.precision for c in result.candidates] == ["fp16", "int8"]
    assert result.passed, result.summary() + "".join(
        f"\n{c.label}: {', '.join(c.outputs[0].failures())}" for c in result.candidates if not c.passed)


@pytest.mark.parametrize("name", list_models())
def test_tiny_fp16_and_int8_pass_the_gates(name: str, calib_with_parity: Path, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    _check(name, dict(TINY[spec.name].options), TINY[spec.name].input_size, calib_with_parity, tmp_path, holdout=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50", "msinet"])
def test_full_size_fp16_and_int8_pass_the_gates(name: str, calib_with_parity: Path, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    _check(name, {}, spec.input_size, calib_with_parity, tmp_path, holdout=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenetv2", "msinet"])
def test_trained_checkpoints_pass_the_gates_on_unseen_photographs(name: str, tmp_path: Path) -> None:
    benchmarks = Path(__file__).resolve().parents[2] / "benchmarks"
    checkpoint = benchmarks / "checkpoints" / f"{name}_small.pt"
    if not checkpoint.is_file():
        pytest.skip(f"{checkpoint} is missing; run python benchmarks/train_small.py")
    options = dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["options"])
    _check(name, options, (192, 256), benchmarks / "data" / "calib", tmp_path, holdout=4, weights=checkpoint)
