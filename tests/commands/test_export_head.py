"""`deploykit export --head argmax`: the written model returns the class map of the verified logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from click.testing import CliRunner

from deploykit.cli import cli

USER = "tests.fixtures.user_models:tiny_segmenter"


def test_export_with_an_argmax_head_writes_a_uint8_class_map(tmp_path: Path) -> None:
    runner = CliRunner()
    plain, headed = tmp_path / "plain.onnx", tmp_path / "head.onnx"
    common = ["export", USER, "--task", "segmentation", "--input-shape", "1,3,48,40", "--static"]
    assert runner.invoke(cli, [*common, "-o", str(plain)]).exit_code == 0
    result = runner.invoke(cli, [*common, "--head", "argmax", "-o", str(headed)])
    assert result.exit_code == 0, result.output
    assert "ArgMax over 3 classes appended" in result.stderr
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 40)).astype(np.float32)
    logits, labels = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                      for p in (plain, headed))
    assert labels.dtype == np.uint8 and labels.shape == (1, 48, 40)
    np.testing.assert_array_equal(labels, np.argmax(logits, axis=1))
