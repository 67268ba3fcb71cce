"""Every zoo model's FP16 and INT8 ONNX Runtime artifacts pass the parity task gates against FP32 on real
photographs (the parity helper's gates, as `deploykit parity` applies them).

Tiny variants run in the default suite; untrained tiny models have near-tied class scores, so INT8 builds use
an accuracy budget (on held-out calibration crops, not the test photographs) to choose the nodes kept in float,
which is the flow a user follows. Full-size variants are slow-marked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.build import build_artifact
from deploykit.calib.precision import CalibrationOptions
from deploykit.export import onnx_from_torch
from deploykit.parity.compare import ParitySettings, run_parity
from deploykit.parity.inputs import resolve_inputs
from deploykit.sources import load_model
from deploykit.targets import open_target
from deploykit.zoo import get_model_spec, list_models
from tests.fixtures.precision_models import photo_folder

BUDGETS = {"segmentation": "pixel_agreement>=0.98", "saliency": "cc>=0.995"}


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("zoo-calib"), count=6)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))


def _check(name: str, options: dict[str, object], size: tuple[int, int], calib: Path, tmp_path: Path,
           holdout: int) -> None:
    spec = get_model_spec(name)
    loaded = load_model(name, options=options)
    source = tmp_path / f"{name}.onnx"
    assert onnx_from_torch(loaded, source, input_shape=(1, 3, *size), simplify=False).passed
    fp16 = build_artifact(source, tmp_path / f"{name}.fp16.ort.onnx", precision="fp16",
                          calibration=CalibrationOptions(data="photos", n=2))
    int8 = build_artifact(source, tmp_path / f"{name}.int8.ort.onnx", precision="int8",
                          calibration=CalibrationOptions(data=str(calib), holdout=holdout),
                          accuracy_budget=BUDGETS[spec.task])
    reference = open_target(str(source))
    candidates = [open_target(str(fp16.path)), open_target(str(int8.path))]
    result = run_parity(reference, candidates, resolve_inputs([reference, *candidates]), ParitySettings())
    assert [c.precision for c in result.candidates] == ["fp16", "int8"]
    assert result.passed, result.summary() + "".join(
        f"\n{c.label}: {', '.join(c.outputs[0].failures())}" for c in result.candidates if not c.passed)


@pytest.mark.parametrize("name", list_models())
def test_tiny_fp16_and_int8_pass_the_gates(name: str, calib: Path, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    _check(name, dict(spec.test_options), spec.test_input_size, calib, tmp_path, holdout=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50", "msinet"])
def test_full_size_fp16_and_int8_pass_the_gates(name: str, calib: Path, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    _check(name, {}, spec.input_size, calib, tmp_path, holdout=2)
