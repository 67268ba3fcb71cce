"""`deploykit parity` end to end with CliRunner: exit 0 on pass, 2 on a corrupted model (with --localize naming
the broken layer), readable errors on bad input, --json, --report, gate overrides, image folders and .npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from deploykit.cli import cli
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.graph.fp16 import fp16_from_onnx
from deploykit.io.images import sample_photographs
from deploykit.targets.resolve import open_target
from deploykit.zoo import get_model_spec
from tests.fixtures.tiny import TINY
from tests.parity.helpers import USER_MODEL, corrupted_copy

SHAPE = "1,3,64,64"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("parity-cli")
    target = open_target(USER_MODEL)
    assert target.loaded is not None
    clean = folder / "tiny.onnx"
    assert onnx_from_torch(target.loaded, clean, input_shape=(1, 3, 64, 64), simplify=False).passed
    bad, node = corrupted_copy(clean, folder / "tiny_bad.onnx")
    assert node == "/context/context.0/Conv"
    return {"clean": clean, "bad": bad}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["parity", *args])


def test_matching_model_passes_on_sample_photographs(models: dict[str, Path]) -> None:
    result = invoke(USER_MODEL, str(models["clean"]))
    assert result.exit_code == 0, result.output
    assert "no --inputs given: 4 scikit-image sample photographs (astronaut, coffee, chelsea, rocket) at 64x64" \
        in result.stdout  # the size recorded in the ONNX metadata, not the factory's 512 default
    row = next(line for line in result.stdout.splitlines() if line.startswith(str(models["clean"])))
    assert "onnxruntime[cpu]" in row and "fp32" in row and row.rstrip().endswith("pass")


def test_corrupted_model_fails_its_check_with_exit_1_and_localize_names_the_layer(models: dict[str, Path]) -> None:
    result = invoke(USER_MODEL, str(models["clean"]), str(models["bad"]), "--input-shape", SHAPE, "--localize")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("…") and "Traceback" not in result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("deploykit: check failed: 1 of 2 candidate(s) fail parity") and "cosine" in error
    assert "first node beyond tolerance: /context/context.0/Conv (Conv) from PyTorch module context.0" \
        in result.stdout
    assert "exporting the reference" in result.stderr  # the FP32 reference ONNX was made from the PyTorch model


@pytest.mark.parametrize("kind", ["not onnx", "fp16", "another model"])
def test_a_reference_onnx_that_cannot_serve_is_refused_before_the_comparison(models: dict[str, Path], kind: str,
                                                                              tmp_path: Path) -> None:
    """A non-ONNX file was exit 3 (protobuf's DecodeError) after the whole comparison; an FP16 graph was used as
    the 'FP32' reference, its own rounding hiding the divergence; a graph taking other shapes failed only after
    the comparison."""
    reference = tmp_path / "reference.onnx"
    if kind == "another model":
        value = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, 16, 16])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["input"], ["output"])], "g", [value],
                                       [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, None)])
        onnx.save(onnx.helper.make_model(graph), str(reference))
    elif kind == "fp16":
        onnx.save(fp16_from_onnx(onnx.load(str(models["clean"]))).model, str(reference))
    else:
        reference.write_text("not a model")
    result = invoke(str(models["clean"]), str(models["bad"]), "--random", "1", "--localize",
                    "--reference-onnx", str(reference))
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("deploykit: error:") and "Traceback" not in result.output
    assert "parity (inputs)" not in result.stderr  # refused before any model ran


@pytest.mark.parametrize("option", [["--top-k", "3"], ["--localize-tol", "0.1"], ["--reference-onnx", "clean"]])
def test_an_option_of_localize_without_it_is_refused(models: dict[str, Path], option: list[str]) -> None:
    """They were ignored silently: a user who typed one expects it to act."""
    value = str(models["clean"]) if option[1] == "clean" else option[1]
    result = invoke(str(models["clean"]), str(models["bad"]), "--random", "1", option[0], value)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == (f"deploykit: error: {option[0]} applies only with --localize; "
                                                      "add --localize or drop it")
    assert "parity (inputs)" not in result.stderr


def test_json_names_an_exported_reference_by_its_source(models: dict[str, Path]) -> None:
    """The reference exported for --localize is a scratch file removed at the end; --json named its gone path."""
    result = invoke(USER_MODEL, str(models["bad"]), "--input-shape", SHAPE, "--limit", "1", "--localize", "--json")
    assert result.exit_code == 1, result.output
    found = json.loads(result.stdout)["candidates"][0]["localization"]
    assert found["reference_onnx"] == f"{USER_MODEL} (exported to ONNX for --localize)"
    assert found["first"]["node"] == "/context/context.0/Conv"


def test_a_mismatch_in_options_is_pointed_out(models: dict[str, Path]) -> None:
    result = invoke(USER_MODEL, "--set", "width=4", str(models["clean"]), "--limit", "1")
    assert result.exit_code == 1
    assert "note: " in result.stdout and "was exported with options {}, the reference is built with {'width': 4}: " \
        "pass the same --set" in result.stdout


def test_json_output_is_parseable_and_carries_the_verdict(models: dict[str, Path]) -> None:
    result = invoke(USER_MODEL, str(models["bad"]), "--input-shape", SHAPE, "--random", "1", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["outcome"] == "check-failed" and data["exit_status"] == 1
    assert data["passed"] is False and data["input_count"] == 1 and data["task"] == "segmentation"
    output = data["candidates"][0]["outputs"][0]
    assert output["metrics"]["cosine"] < 0.99 and 0 < output["metrics"]["pixel_agreement"] < 0.99
    assert {"gate": "cosine>=0.99999", "value": output["metrics"]["cosine"], "passed": False} in output["gates"]


def test_gates_can_be_overridden(models: dict[str, Path]) -> None:
    loose = ["--gate", "cosine>=0.1", "--gate", "pixel_agreement>=0.1", "--gate", "output:miou_major>=0.05"]
    assert invoke(USER_MODEL, str(models["bad"]), "--input-shape", SHAPE, *loose).exit_code == 0
    strict = invoke(USER_MODEL, str(models["clean"]), "--input-shape", SHAPE, "--gate", "max_abs<=0")
    assert strict.exit_code == 1 and "output max_abs" in strict.stderr
    assert invoke(USER_MODEL, str(models["bad"]), "--input-shape", SHAPE, "--precision", "int8").exit_code == 1


def test_report_is_written_and_not_overwritten_without_force(models: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "parity.md"
    args = [USER_MODEL, str(models["clean"]), "--input-shape", SHAPE, "--limit", "1", "--report", str(report)]
    assert invoke(*args).exit_code == 0
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Parity report: pass") and "| candidate | backend |" in text
    again = invoke(*args)
    assert again.exit_code == 2 and "exists already; pass --force" in again.stderr
    assert invoke(*args, "--force").exit_code == 0


def test_image_folder_and_npz_inputs(models: dict[str, Path], tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, photo in zip(("coffee", "chelsea"), sample_photographs(("coffee", "chelsea")), strict=True):
        Image.fromarray(photo).save(photos / f"{name}.png")
    folder = invoke(USER_MODEL, str(models["clean"]), "--inputs", str(photos))
    assert folder.exit_code == 0, folder.output
    assert "2 images from" in folder.stdout and "at 64x64" in folder.stdout
    arrays = tmp_path / "inputs.npz"
    np.savez(arrays, input=np.random.default_rng(1).standard_normal((2, 3, 40, 56)).astype(np.float32))
    npz = invoke(USER_MODEL, str(models["clean"]), "--inputs", str(arrays), "--random", "1",
                 "--input-shape", "1,3,40,56")
    assert npz.exit_code == 0, npz.output
    assert "2 inputs from inputs.npz; 1 random normal tensors of shape 1x3x40x56" in npz.stdout


@pytest.mark.parametrize("args, message", [
    (["missing.onnx"], "missing.onnx does not exist"),
    (["{clean}", "--gate", "cosine=>1"], "is not [output:]metric OP number"),
    (["{clean}", "--input-shape", "1,4,64,64", "--random", "1"], "--input-shape has 4 channels, but"),
    (["{clean}", "--input-shape", "1,4,64,64"], "--input-shape has 4 channels, but"),
    (["{clean}", "--input-shape", "64,64"], "is not 4 positive integers"),
    (["{clean}", "--providers", "cuda"], "onnxruntime-gpu"),
    (["{clean}", "--gate", "aux:cosine>=0.9"], "names output 'aux'; the outputs are output"),
])
def test_bad_input_is_one_line_and_exit_2(models: dict[str, Path], args: list[str], message: str) -> None:
    if "cuda" in args and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    result = invoke(USER_MODEL, *[a.format(clean=models["clean"]) for a in args], "--limit", "1")
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("deploykit: error: ") and message in last
    assert "Traceback" not in result.output


def test_saliency_model_reports_saliency_metrics(tmp_path: Path) -> None:
    spec = get_model_spec("msinet")
    target = open_target("msinet", options=dict(TINY[spec.name].options))
    assert target.loaded is not None
    path = tmp_path / "msinet.onnx"
    assert onnx_from_torch(target.loaded, path, input_shape=(1, 3, *TINY[spec.name].input_size), simplify=False).passed
    options = [f"--set={k}={v}" for k, v in TINY[spec.name].options.items()]
    result = invoke("msinet", *options, str(path), "--limit", "2", "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["candidates"][0]["outputs"][0]["metrics"]
    assert metrics["cc"] > 0.9999 and metrics["sim"] > 0.999 and abs(metrics["kld"]) < 1e-4
    assert metrics["nss_ratio"] == pytest.approx(1.0, abs=1e-3)
