"""The image ensemble `package --triton` writes: NAME_pre -> NAME -> NAME_post, valid for Triton's schema, with
the deploykit code it runs beside it; the Dockerfile and KServe manifest at the root. (tests/serve runs the same
image models in the bundled Triton server.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deploykit.cli import cli
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.zoo.sources import load_model

USER = "tests.fixtures.user_models:tiny_segmenter"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    seg, sal, bare = folder / "seg.onnx", folder / "sal.onnx", folder / "bare.onnx"
    onnx_from_torch(load_model(USER, options={"num_classes": 4}), seg, input_shape=(1, 3, 32, 32), simplify=False)
    onnx_from_torch(load_model(USER, options={"num_classes": 1}, task="saliency"), sal, input_shape=(1, 3, 32, 32),
                    simplify=False)
    proto = onnx.load(str(seg))
    del proto.metadata_props[:]  # an ONNX file from elsewhere: no task, no preprocessing
    onnx.save(proto, str(bare))
    gray = folder / "gray.onnx"  # one input channel: images cannot feed it
    onnx_from_torch(load_model(USER, options={"in_channels": 1}), gray, input_shape=(1, 1, 32, 32), simplify=False)
    return {"seg": seg, "sal": sal, "bare": bare, "gray": gray}


def _config(path: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)
    return config


def test_ensemble_chains_preprocessing_the_artifact_and_the_mask(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "repo"
    args = ["package", "--triton", str(models["seg"]), str(models["sal"]), str(models["bare"]), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "bare", "sal", "sal_image", "sal_post", "sal_pre", "seg", "seg_image", "seg_post", "seg_pre"]
    ensemble = _config(out / "seg_image" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 8
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["seg_pre", "seg", "seg_post"]
    assert ensemble.input[0].data_type == model_config_pb2.TYPE_STRING and list(ensemble.input[0].dims) == [1]
    assert ensemble.output[0].data_type == model_config_pb2.TYPE_UINT8
    assert _config(out / "sal_image" / "config.pbtxt").output[0].data_type == model_config_pb2.TYPE_FP32
    pre = _config(out / "seg_pre" / "config.pbtxt")
    settings = json.loads(pre.parameters["deploykit"].string_value)
    assert pre.backend == "python" and settings["input_size"] == [32, 32] and settings["task"] == "segmentation"
    assert list(pre.output[0].dims) == [3, 32, 32]
    assert (out / "Dockerfile").read_text().count("pip install --no-cache-dir pillow") == 1
    manifest = (out / "inferenceservice.yaml").read_text()
    assert "kind: InferenceService" in manifest and "/v2/health/ready" in manifest and "name: deploykit-seg" in manifest


def test_no_images_and_models_without_metadata_get_no_image_models(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "repo"
    result = CliRunner().invoke(cli, ["package", "--triton", str(models["seg"]), "--out", str(out), "--no-images"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["seg"]


def test_a_model_whose_input_is_not_rgb_gets_no_image_models_and_the_output_says_why(models: dict[str, Path],
                                                                                      tmp_path: Path) -> None:
    """Decoded images are 3-channel RGB: a 1-channel model's NAME_image could only fail on every request."""
    out = tmp_path / "repo"
    result = CliRunner().invoke(cli, ["package", "--triton", str(models["gray"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["gray"]
    assert list(_config(out / "gray" / "config.pbtxt").input[0].dims) == [1, -1, -1]
    assert "no gray_image: its input has 1 channel and images are read as 3-channel RGB" in result.output


def test_image_steps_carry_the_deploykit_code_they_import_and_nothing_heavy(models: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "repo"
    assert CliRunner().invoke(cli, ["package", "--triton", str(models["seg"]), "--out", str(out)]).exit_code == 0
    version = out / "seg_pre" / "1"
    assert (version / "model.py").read_text().startswith('"""model.py of NAME_pre and NAME_post')
    probe = ("import sys, deploykit.io.images, deploykit.io.masks; "
             "print(deploykit.io.images.__file__); print('torch' in sys.modules, 'onnx' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(version)}
    lines = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.split()
    assert lines[0].startswith(str(version)) and lines[1:] == ["False", "False"]


def test_a_model_named_like_an_image_step_is_refused(models: dict[str, Path], tmp_path: Path) -> None:
    args = ["package", "--triton", str(models["seg"]), str(models["sal"]), "--name", "seg", "--name", "seg_pre",
            "--out", str(tmp_path / "repo")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "seg_pre" in result.output and not (tmp_path / "repo").exists()
