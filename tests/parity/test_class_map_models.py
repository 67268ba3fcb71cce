"""A model that ends in its own argmax gives an N,H,W integer class map in PyTorch and in ONNX: parity scores it
as class maps (pixel agreement, mIoU), as it does `--head argmax` exports. Before, the PyTorch reference's map
came back as float32 and parity refused it ("a segmentation output must be N,C,H,W")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from deploykit.backends.torch import TorchRunner
from deploykit.cli import cli
from deploykit.zoo.sources import load_model

FACTORY = "tests.fixtures.user_models:argmax_inside"


def test_the_reference_keeps_an_integer_output_integer() -> None:
    with TorchRunner(load_model(FACTORY).module) as runner:
        out = runner.infer({"input": np.random.default_rng(0).standard_normal((2, 3, 16, 24)).astype(np.float32)})
    assert out["output"].dtype == np.int64 and out["output"].shape == (2, 16, 24)


def test_parity_scores_a_model_that_ends_in_argmax_as_class_maps(tmp_path: Path) -> None:
    model, built = tmp_path / "m.onnx", tmp_path / "m8.onnx"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", FACTORY, "--input-shape", "1,3,32,32", "--task", "segmentation",
                                 "-o", str(model)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["build-engine", str(model), "--int8", "--calib-data", "synthetic", "--calib-n", "4",
                                 "-o", str(built)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["parity", FACTORY, str(model), str(built), "--random", "3", "--json"])
    assert result.exit_code in (0, 1), result.output  # an INT8 build of random weights may miss a gate
    data = json.loads(result.stdout)
    for candidate in data["candidates"]:
        metrics = candidate["outputs"][0]["metrics"]
        assert 0.0 <= metrics["pixel_agreement"] <= 1.0 and "miou" in metrics
    assert data["candidates"][0]["outputs"][0]["metrics"]["pixel_agreement"] == 1.0
