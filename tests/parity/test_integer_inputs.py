"""An ONNX model that takes uint8 pixels and normalises inside (common in exported deployment graphs), with no
deploykit metadata, is fed the pixels of parity's images: ImageNet-normalised floats cast to uint8 wrapped to
0, 1, 2, 254 and 255. Oracle: the same convolution taking the pixels as float32 must agree with it exactly."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from onnx import TensorProto

from deploykit.cli import cli
from tests.fixtures.pixel_models import pixel_images, pixel_model


def test_an_integer_input_model_is_fed_pixels_and_agrees_with_its_float_twin(tmp_path: Path) -> None:
    pixel_model(tmp_path / "u8.onnx", TensorProto.UINT8)
    pixel_model(tmp_path / "f32.onnx", TensorProto.FLOAT)
    images = pixel_images(tmp_path / "images", 3)
    result = CliRunner().invoke(cli, ["parity", str(tmp_path / "u8.onnx"), str(tmp_path / "f32.onnx"),
                                      "--inputs", str(images), "--task", "segmentation", "--input-shape", "1,3,24,32",
                                      "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "as pixels in [0, 255]" in json.dumps(report)
    scores = json.dumps(report)
    assert '"pixel_agreement": 1.0' in scores or '"pixel_agreement": 1' in scores, scores[:2000]


def test_localize_feeds_an_integer_input_model_what_the_comparison_fed_it(tmp_path: Path) -> None:
    """--localize runs the graphs on the comparison's worst input, converted the one way the comparison converts
    it (TensorSpec.feed): on one image, the cosine it measures at the graph's output is the comparison's."""
    pixel_model(tmp_path / "reference.onnx", TensorProto.UINT8)
    pixel_model(tmp_path / "candidate.onnx", TensorProto.UINT8, seed=2)
    images = pixel_images(tmp_path / "images", 1)
    result = CliRunner().invoke(cli, ["parity", str(tmp_path / "reference.onnx"), str(tmp_path / "candidate.onnx"),
                                      "--inputs", str(images), "--task", "segmentation", "--input-shape", "1,3,24,32",
                                      "--localize", "--json"])
    assert result.exit_code == 1, result.output  # the candidate's other weights fail the gates
    candidate = json.loads(result.stdout)["candidates"][0]
    compared = candidate["outputs"][0]["metrics"]["cosine"]
    at_output = [row for row in candidate["localization"]["top"] if row["tensor"] == "output"]
    assert at_output and abs(at_output[0]["cosine"] - compared) < 1e-6, (compared, candidate["localization"])
