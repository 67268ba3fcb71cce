"""`deploykit parity --localize` on the tiny zoo DeepLabv3+ through the command line (the exported model is the
session fixture in conftest.py, the same weights as the PyTorch reference: open_target seeds the builder)."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.zoo import get_model_spec
from tests.fixtures.tiny import TINY
from tests.parity.helpers import ZOO_MODEL, corrupted_copy


def test_cli_localizes_the_corrupted_conv_in_the_zoo_model(zoo_onnx: Path, tmp_path: Path) -> None:
    """The acceptance case: one Conv in the middle of the tiny DeepLabv3+ scaled x4; parity fails (exit 1)
    and --localize names that Conv and its PyTorch module first."""
    spec = get_model_spec(ZOO_MODEL)
    clean = zoo_onnx
    bad, node = corrupted_copy(clean, tmp_path / "zoo_bad.onnx")
    options = [f"--set={k}={v}" for k, v in TINY[spec.name].options.items()]
    result = CliRunner().invoke(cli, ["parity", ZOO_MODEL, *options, str(clean), str(bad), "--localize",
                                      "--reference-onnx", str(clean)])
    assert result.exit_code == 1, result.output
    first = re.search(r"first node beyond tolerance: (\S+) \((\w+)\) from PyTorch module (\S+):", result.stdout)
    assert first is not None and first.groups() == (node, "Conv", "backbone.features.11.conv.0.0")
    clean_row = next(line for line in result.stdout.splitlines() if line.startswith(str(clean)))
    assert clean_row.rstrip().endswith("pass")  # the unmodified export matches PyTorch
