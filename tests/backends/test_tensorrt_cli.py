"""build-engine -> parity -> bench through the CLI with the tensorrt double (10.x and 11.x profiles), and
`doctor --selftest`. Timings printed under the double are CPU times of a fake, checked for shape only."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.io.metadata import read_metadata, write_metadata
from deploykit.io.sidecar import read_sidecar
from tests.fakes.fixtures import TrtDouble


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _json(result) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_build_parity_bench_end_to_end(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path,
                                       runner: CliRunner) -> None:
    plan, cache = tmp_path / "tiny.plan", tmp_path / "timing.cache"
    built = _json(runner.invoke(cli, ["build-engine", str(tiny_onnx), "--backend", "auto", "-o", str(plan),
                                      "--opt-shape", "input:1x3x64x64", "--max-shape", "input:2x3x96x96",
                                      "--timing-cache", str(cache), "--json"]))
    assert built["backend"] == "tensorrt" and "found a working builder" in built["backend_note"]
    assert built["precision_audit"]["detailed"] and built["precision_audit"]["layer_share"] == {"fp32": 1.0}
    sidecar = read_sidecar(plan)
    assert sidecar is not None and sidecar.build_options["profile"]["input"]["max"] == [2, 3, 96, 96]
    assert cache.is_file()
    parity = _json(runner.invoke(cli, ["parity", str(tiny_onnx), str(plan), "--limit", "2", "--json"]))
    assert "tensorrt" in json.dumps(parity)
    bench = _json(runner.invoke(cli, ["bench", "run", str(plan), "--iterations", "3", "--warmup", "0",
                                      "--no-roofline", "--cuda-graph", "--json"]))
    text = json.dumps(bench)
    assert "compute" in text and "CUDA graph replay" in text


def test_fp16_engine_from_the_precision_pass(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path,
                                             runner: CliRunner) -> None:
    plan = tmp_path / "tiny.fp16.plan"
    built = _json(runner.invoke(cli, ["build-engine", str(tiny_onnx), "--fp16", "--backend", "tensorrt",
                                      "-o", str(plan), "--calib-data", "synthetic", "--calib-n", "2", "--json"]))
    assert built["precision"] == "fp16" and Path(built["precision_onnx"]).is_file()
    assert trt_double.state.builds[-1]["flags"] == 0  # FP16 came from the graph, not a builder flag
    assert _json(runner.invoke(cli, ["parity", str(tiny_onnx), str(plan), "--limit", "1", "--json"]))


def test_tensorrt_options_do_not_apply_to_onnxruntime(tiny_onnx: Path, tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["build-engine", str(tiny_onnx), "--backend", "onnxruntime", "-o",
                                 str(tmp_path / "m.onnx"), "--workspace", "64"])
    assert result.exit_code == 2 and "do not apply" in result.output


def test_build_engine_without_a_gpu_says_why(trt_double_no_gpu: TrtDouble, tiny_onnx: Path, tmp_path: Path,
                                             runner: CliRunner) -> None:
    result = runner.invoke(cli, ["build-engine", str(tiny_onnx), "--backend", "tensorrt", "-o",
                                 str(tmp_path / "m.plan")])
    assert result.exit_code == 2 and "TensorRT is unusable" in result.output
    assert list(tmp_path.iterdir()) == []


def test_doctor_selftest_passes_under_the_double(trt_double: TrtDouble, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["doctor", "--selftest", "--json"])
    selftest = _json(result)["selftest"]
    assert selftest["passed"] and selftest["tensorrt_version"].endswith("+testdouble")
    assert selftest["cosine"] > 0.9999


def test_doctor_selftest_says_why_it_cannot_run(trt_double_no_gpu: TrtDouble, runner: CliRunner) -> None:
    result = runner.invoke(cli, ["doctor", "--selftest"])
    assert result.exit_code == 2
    assert "self-test cannot run: TensorRT" in result.output and "cannot construct a builder" in result.output


def test_doctor_full_needs_selftest(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["doctor", "--full"])
    assert result.exit_code == 2 and "--selftest --full" in result.output


def _tagged(tiny_onnx: Path, tmp_path: Path, model: str, size: tuple[int, int]) -> Path:
    """The tiny graph with a zoo model's name and size in its metadata: build-engine then applies that model's
    size rule (the double builds any graph)."""
    graph = onnx.load(str(tiny_onnx))
    meta = read_metadata(graph)
    assert meta is not None
    write_metadata(graph, replace(meta, model=model, input_size=size))
    path = tmp_path / f"{model}.onnx"
    onnx.save(graph, str(path))
    return path


def test_the_default_profile_follows_the_size_rule_and_a_refused_shape_is_bad_input(
        trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path, runner: CliRunner) -> None:
    """U-Net takes only 16k+60 sides: the defaults were 288/576/1152 (multiples of its 16), all refused."""
    unet = _tagged(tiny_onnx, tmp_path, "unet", (572, 572))
    plan = tmp_path / "unet.plan"
    result = runner.invoke(cli, ["build-engine", str(unet), "--backend", "tensorrt", "-o", str(plan)])
    assert result.exit_code == 0, result.output
    assert "follows the model's size rule" in result.output
    sidecar = read_sidecar(plan)
    assert sidecar is not None
    profile = sidecar.build_options["profile"]["input"]
    assert (profile["min"][2:], profile["opt"][2:], profile["max"][2:]) == ([300, 300], [572, 572], [1148, 1148])
    refused = runner.invoke(cli, ["build-engine", str(unet), "--backend", "tensorrt", "-o", str(tmp_path / "b.plan"),
                                  "--max-shape", "input:2x3x1000x1000"])
    assert refused.exit_code == 2, refused.output
    line = refused.output.strip().splitlines()[-1]
    assert line.startswith("deploykit: error: --max-shape 2x3x1000x1000") and "988 or 1004" in line, line
    assert not (tmp_path / "b.plan").exists()


def test_an_input_with_a_dynamic_channel_axis_builds_with_it_fixed(trt_double: TrtDouble, tmp_path: Path,
                                                                   runner: CliRunner) -> None:
    """TensorRT refuses a convolution over a dynamic 'C' (NvInfer.h addConvolutionNd), whatever the profile: the
    build fixes the axis to what the first Conv reads; a profile that contradicts it is refused before the build."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["y"], name="stem", pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, "h", "w"])],
        initializer=[numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")])
    source, plan = tmp_path / "dynamic_c.onnx", tmp_path / "c.plan"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(source))
    wrong = runner.invoke(cli, ["build-engine", str(source), "--backend", "tensorrt", "-o", str(plan),
                                "--opt-shape", "input:1x3x32x32"])
    assert wrong.exit_code == 2 and "takes 1 channels" in wrong.output and not trt_double.state.builds
    built = _json(runner.invoke(cli, ["build-engine", str(source), "--backend", "tensorrt", "-o", str(plan),
                                      "--opt-shape", "input:1x1x32x32", "--json"]))
    assert built["backend"] == "tensorrt"
    sidecar = read_sidecar(plan)
    assert sidecar is not None and sidecar.build_options["graph_rewrites"] == ["channels"]


def test_a_profile_the_model_contradicts_is_refused_before_the_precision_pass(trt_double: TrtDouble, tiny_onnx: Path,
                                                                              tmp_path: Path,
                                                                              runner: CliRunner) -> None:
    """Backend.preflight runs TensorRTBuildOptions.check_model: no calibration, no FP16 pass, nothing written."""
    plan = tmp_path / "tiny.plan"
    result = runner.invoke(cli, ["build-engine", str(tiny_onnx), "--fp16", "--backend", "tensorrt", "-o", str(plan),
                                 "--calib-data", "synthetic", "--calib-n", "2", "--opt-shape", "input:1x4x64x64"])
    assert result.exit_code == 2 and "--opt-shape 1x4x64x64 for 'input': axis 1 is fixed to 3" in result.output
    assert "calibrat" not in result.output and "FP16:" not in result.output and not list(tmp_path.iterdir())
