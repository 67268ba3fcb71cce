"""An ONNX model that takes uint8 pixels and normalises inside (common in exported deployment graphs), with no
deploykit metadata, is fed the pixels of parity's images: ImageNet-normalised floats cast to uint8 wrapped to
0, 1, 2, 254 and 255. Oracle: the same convolution taking the pixels as float32 must agree with it exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from deploykit.cli import cli


def _model(path: Path, elem_type: int, seed: int = 0) -> None:
    """Pixels (N,3,H,W) -> 4 class scores: a 1x1 convolution of pixels / 255, after a Cast for integer input."""
    weights = np.random.default_rng(seed).standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Div", ["pixels", "scale"], ["x"]),
             helper.make_node("Conv", ["x", "w"], ["output"])]
    if elem_type != TensorProto.FLOAT:
        nodes.insert(0, helper.make_node("Cast", ["input"], ["pixels"], to=TensorProto.FLOAT))
    else:
        nodes.insert(0, helper.make_node("Identity", ["input"], ["pixels"]))
    graph = helper.make_graph(
        nodes, "pixels", [helper.make_tensor_value_info("input", elem_type, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 4, "h", "w"])],
        initializer=[numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.float32(255.0), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _images(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def test_an_integer_input_model_is_fed_pixels_and_agrees_with_its_float_twin(tmp_path: Path) -> None:
    _model(tmp_path / "u8.onnx", TensorProto.UINT8)
    _model(tmp_path / "f32.onnx", TensorProto.FLOAT)
    images = _images(tmp_path / "images", 3)
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
    _model(tmp_path / "reference.onnx", TensorProto.UINT8)
    _model(tmp_path / "candidate.onnx", TensorProto.UINT8, seed=2)
    images = _images(tmp_path / "images", 1)
    result = CliRunner().invoke(cli, ["parity", str(tmp_path / "reference.onnx"), str(tmp_path / "candidate.onnx"),
                                      "--inputs", str(images), "--task", "segmentation", "--input-shape", "1,3,24,32",
                                      "--localize", "--json"])
    assert result.exit_code == 1, result.output  # the candidate's other weights fail the gates
    candidate = json.loads(result.stdout)["candidates"][0]
    compared = candidate["outputs"][0]["metrics"]["cosine"]
    at_output = [row for row in candidate["localization"]["top"] if row["tensor"] == "output"]
    assert at_output and abs(at_output[0]["cosine"] - compared) < 1e-6, (compared, candidate["localization"])
