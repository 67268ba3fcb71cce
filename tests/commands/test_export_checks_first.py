"""export checks what it can before its long work (tracing, checking, verifying on two shapes): a head that
cannot apply to the model's task or output is refused after one forward, not after verification."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit.cli import cli

F = "tests.fixtures.user_models"


@pytest.mark.parametrize(("args", "says"), [
    ([f"{F}:tiny_segmenter", "--set", "num_classes=1", "--task", "saliency", "--head", "argmax"],
     "--head argmax is for segmentation models; this one is a saliency model"),
    ([f"{F}:argmax_inside", "--head", "argmax"], "the model's first output has shape [1, 32, 32]"),
    ([f"{F}:tiny_segmenter", "--head", "normalize"], "--head normalize is for saliency models"),
])
def test_a_head_that_cannot_apply_is_refused_before_the_export(tmp_path: Path, args: list[str], says: str) -> None:
    out = tmp_path / "x.onnx"
    result = CliRunner().invoke(cli, ["export", *args, "--input-shape", "1,3,32,32", "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert says in lines[-1]
    assert not any(word in line for line in lines for word in ("exporting", "verifying")), lines
    assert not out.exists()
