"""An --input-shape a zoo model's size rule refuses is refused before the model is built (DilatedNet took 20 s to
build before `export dilatednet_frontend --input-shape 1,3,1,1` said its sides must be at least 2), and parity
parses --input-shape before it builds any model (`parity dilatednet_frontend x.onnx --input-shape 1,3,abc`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.zoo._registry import ModelSpec
from deploykit.zoo.sources import check_source_size


@pytest.fixture()
def never_built(monkeypatch: pytest.MonkeyPatch) -> None:
    def built(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was built")

    monkeypatch.setattr(ModelSpec, "build", built)


@pytest.mark.parametrize(("args", "says"), [
    (["export", "dilatednet_frontend", "--input-shape", "1,3,1,1", "-o", "{tmp}/m.onnx"], "at least 2"),
    (["export", "unet", "--input-shape", "1,3,200,200", "-o", "{tmp}/m.onnx"], "use 188 or 204"),
    (["parity", "unet", "unet", "--input-shape", "1,3,200,200"], "use 188 or 204"),
    (["parity", "msinet", "msinet", "--input-shape", "1,3,abc"], "not 4 positive integers"),
    (["bench", "run", "msinet", "--input-shape", "1,3,4,4"], "at least 8"),
    (["deploy", "msinet", "--input-shape", "1,3,4,4", "--out", "{tmp}/out"], "at least 8"),
])
def test_a_size_the_rule_refuses_is_refused_before_the_model_is_built(
        never_built: None, tmp_path: Path, args: list[str], says: str) -> None:
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("deploykit: error: ") and says in line, line
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "out" / "model.onnx").exists()


def test_the_rule_waits_for_a_checkpoints_options(never_built: None, tmp_path: Path) -> None:
    """With --weights the checkpoint may imply options the rule reads (U-Net's padded): no early verdict."""
    check_source_size("unet", (1, 3, 200, 200), {}, weights=str(tmp_path / "unet.pth"))
    check_source_size("unet", (1, 3, 208, 208), {"padded": True})
    check_source_size("pkg.module:factory", (1, 3, 1, 1), {})
    check_source_size("no_such_model", (1, 3, 1, 1), {})
