"""`deploykit build-engine` through Click: exit codes, the backend line, JSON output, errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit.backends.tensorrt.backend import availability as tensorrt_status
from deploykit.cli import cli
from tests.fixtures.precision_models import export_user_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_user_model(tmp_path_factory.mktemp("cli") / "net.onnx")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))


def test_fp16_build_says_which_backend(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.fp16.ort.onnx"
    result = CliRunner().invoke(cli, ["build-engine", str(model), "--fp16", "--calib-data", "photos",
                                      "--calib-n", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    if not tensorrt_status().ready:
        assert "backend: ONNX Runtime, the default here: TensorRT is" in result.stdout
    assert (tmp_path / "net.fp16.onnx").is_file() and Path(str(out) + ".deploykit.json").is_file()
    again = CliRunner().invoke(cli, ["build-engine", str(model), "--fp16", "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.stderr


def test_int8_json_and_synthetic_warning(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.int8.ort.onnx"
    result = CliRunner().invoke(cli, ["build-engine", str(model), "--int8", "--calib-data", "synthetic",
                                      "--calib-n", "3", "--calib-method", "minmax", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "synthetic noise" in result.stderr
    data = json.loads(result.stdout)
    assert data["precision"] == "int8" and data["report"]["quantized_nodes"] == 6
    assert data["precision_onnx"] == str(tmp_path / "net.int8.onnx")


def test_errors_are_one_line(model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["build-engine", str(model), "--int8", "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert result.stderr.startswith("deploykit: error: INT8 needs calibration data")
    result = CliRunner().invoke(cli, ["build-engine", str(model), "--fp16", "--keep-fp32", "Nope",
                                      "-o", str(tmp_path / "y.onnx")])
    assert result.exit_code == 2 and "matches no node" in result.stderr


def test_int8_float_fp16_and_the_qdq_lint_of_both_layouts(model: Path, tmp_path: Path) -> None:
    for layout in ("inputs", "inputs+outputs"):
        out = tmp_path / layout.replace("+", "_") / "net.int8.ort.onnx"
        out.parent.mkdir()
        result = CliRunner().invoke(cli, ["build-engine", str(model), "--int8", "--calib-data", "photos",
                                          "--calib-n", "2", "--qdq-layout", layout, "--int8-float", "fp16",
                                          "--json", "-o", str(out)])
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["report"]["int8_float"] == {"asked": "fp16", "chosen": "fp16", "why": "asked for"}
        sidecar = json.loads(Path(str(out) + ".deploykit.json").read_text())
        assert sidecar["build_options"]["calibration"]["int8_float"] == "fp16"
        linted = CliRunner().invoke(cli, ["lint", data["precision_onnx"], "--target", "tensorrt", "--json"])
        assert linted.exit_code == 0, linted.output
        rules = {f["rule"] for f in json.loads(linted.stdout)["findings"]}
        assert ("qdq-unfused-dq" in rules) == (layout == "inputs+outputs"), rules


def test_fp16_io_with_an_accuracy_budget_builds(model: Path, tmp_path: Path) -> None:
    """Was 'a bug in deploykit' (exit 1): the budget fed float32 to a graph with float16 inputs."""
    out = tmp_path / "net.fp16io.ort.onnx"
    result = CliRunner().invoke(cli, ["build-engine", str(model), "--fp16", "--fp16-io", "--calib-data", "photos",
                                      "--calib-n", "4", "--accuracy-budget", "cosine>=0.99", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    budget = json.loads(result.stdout)["report"]["budget"]
    assert budget["reached"]["cosine"] >= 0.99


def test_int8_recovery_steps_are_options_recorded_in_the_sidecar(model: Path, tmp_path: Path) -> None:
    """Bias correction and cross-layer equalization run by default, AdaRound and distillation when asked; each
    step's option and what it did land in the sidecar's precision report and in build-engine's output."""
    def build(name: str, *flags: str) -> tuple[dict[str, object], str]:
        out = tmp_path / name / "net.int8.ort.onnx"
        out.parent.mkdir()
        result = CliRunner().invoke(cli, ["build-engine", str(model), "--int8", "--calib-data", "synthetic",
                                          "--calib-n", "3", *flags, "-o", str(out)])
        assert result.exit_code == 0, result.output
        sidecar = json.loads(Path(str(out) + ".deploykit.json").read_text())
        return sidecar["precision_report"], result.stdout

    report, shown = build("defaults")
    assert report["recovery"] == {"bias_correction": {"enabled": True},
                                  "equalization": {"relu": False, "relu6": True, "rounds": 8},
                                  "rounding": {"rounding": "nearest"}, "distillation": {"steps": 0}}
    assert report["bias_correction"]["layers"] > 0 and report["equalization"]["pairs"] > 0
    assert "adaround" not in report
    assert "INT8: accuracy recovery: " in shown and "bias correction" in shown
    report, shown = build("asked", "--no-int8-bias-correction", "--int8-equalize", "none",
                          "--int8-rounding", "adaround")
    assert report["recovery"]["bias_correction"] == {"enabled": False}
    assert report["recovery"]["rounding"]["rounding"] == "adaround"
    assert report["recovery"]["rounding"]["asymmetric"] is False  # the mode is recorded in the sidecar
    assert "bias_correction" not in report and not report["equalization"]["pairs"]
    assert 0 < report["adaround"]["layers"] <= report["quantized_nodes"]  # the convs
    assert "AdaRound" in shown
    report, shown = build("distilled", "--int8-distill", "32")
    assert report["recovery"]["distillation"]["steps"] == 32
    record = report["distillation"]
    assert record["layers"] > 0 and record["loss_after"] <= record["loss_before"], record
    assert "distillation of" in shown or "no distillation (" in shown
