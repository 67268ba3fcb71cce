"""`deploykit lint`: exit codes, the text rendering and --json (GPU-free)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from click.testing import CliRunner

from deploykit.cli import cli
from tests.graph import graphs


def test_lint_clean_model_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "ok.onnx"
    onnx.save(graphs.resize(), path)
    result = CliRunner().invoke(cli, ["lint", str(path), "--target", "tensorrt"])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output and "TensorRT should parse it" in result.output


def test_lint_errors_exit_1_with_node_why_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "crop.onnx"
    onnx.save(graphs.resize(transform="tf_crop_and_resize"), path)
    result = CliRunner().invoke(cli, ["lint", str(path)])
    assert result.exit_code == 1
    assert "error   up1 (Resize) [resize-coordinates]" in result.output
    assert "why: coordinate_transformation_mode 'tf_crop_and_resize'" in result.output
    assert "fix: use F.interpolate with align_corners" in result.output


def test_lint_json(tmp_path: Path) -> None:
    path = tmp_path / "unpool.onnx"
    onnx.save(graphs.unpooling(), path)
    result = CliRunner().invoke(cli, ["lint", str(path), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["target"] == "tensorrt" and data["ok"] and data["warnings"] == 2
    assert {f["node"] for f in data["findings"]} == {"pool1", "unpool1"}


def test_lint_unusable_input_exits_2(tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["lint", str(tmp_path / "nope.onnx")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not onnx at all")
    result = CliRunner().invoke(cli, ["lint", str(garbage)])
    assert result.exit_code == 2 and "not a readable ONNX model" in result.output and "Traceback" not in result.output
