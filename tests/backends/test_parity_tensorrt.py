"""`deploykit parity` with a TensorRT engine as candidate, run through the tensorrt double (which executes the
engine's ONNX in ONNX Runtime): the sidecar picks the backend; --localize explains it needs an ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from deploykit.backends.tensorrt.build import engine_from_onnx
from deploykit.cli import cli
from deploykit.targets.resolve import open_target
from tests.fakes.fixtures import TrtDouble

TINY = "tests.fixtures.user_models:tiny_segmenter"


def test_engine_is_compared_in_its_own_backend(trt_double: TrtDouble, tiny_onnx: Path, tmp_path: Path) -> None:
    plan = tmp_path / "tiny.plan"
    engine_from_onnx(tiny_onnx, plan)
    target = open_target(str(plan))
    assert (target.kind, target.precision, target.task, target.input_size) == ("artifact", "fp32", "segmentation",
                                                                               (64, 64))
    assert target.onnx_path is None and target.runner.backend == "tensorrt"
    result = CliRunner().invoke(cli, ["parity", TINY, str(plan), "--limit", "2", "--json", "--gate", "cosine<0.5",
                                      "--localize"])
    assert result.exit_code == 1, result.output  # a gate identical outputs fail: a failing run
    data = json.loads(result.stdout)
    candidate = data["candidates"][0]
    assert candidate["backend"].startswith("tensorrt") and candidate["precision"] == "fp32"
    metrics = candidate["outputs"][0]["metrics"]
    assert metrics["cosine"] > 0.99999 and metrics["pixel_agreement"] == 1.0
    assert "needs an ONNX candidate" in candidate["localize_note"] and candidate["localization"] is None
