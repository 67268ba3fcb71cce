"""deploykit.exporters.check_export_fits: an export too large for the memory available is refused in one line
before the long work (the input-only check let 1x3x8192x8192 of a tiny model run 37 s into an allocation failure,
and under overcommit the OOM killer ends such an export without a word)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.exporters import _probe_shape, check_export_fits
from deploykit.zoo.sources import load_model

TINY = "tests.fixtures.user_models:tiny_segmenter"


def test_an_export_beyond_the_memory_available_is_refused_before_any_run_at_its_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: 2 * 10**9)

    def ran(*_args: object) -> None:
        raise AssertionError("the model ran at the export size")

    monkeypatch.setattr("deploykit.export.onnx_from_torch.model_outputs", ran)
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(cli, ["export", TINY, "--input-shape", "1,3,6144,6144", "-o", str(out)])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("deploykit: error: exporting ") and "1x3x6144x6144" in line, line
    assert "needs about" in line and "2.0 GB available" in line and "smaller --input-shape" in line, line
    assert not out.exists()


def test_an_export_that_fits_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: 2 * 10**9)
    check_export_fits(load_model(TINY), [(1, 3, 1024, 1024), (2, 3, 1032, 1040)], "exporting", "give less")


def test_the_probe_is_a_smaller_size_the_model_takes_and_none_at_the_zoo_default() -> None:
    unet = load_model("unet")
    probe = _probe_shape(unet, (2, 3, 2060, 2076))
    assert probe is not None and probe[0] == 1 and all((side - 60) % 16 == 0 for side in probe[2:]), probe
    assert _probe_shape(unet, (2, 3, 572 + 16, 572 + 32)) is None
    assert _probe_shape(load_model(TINY), (2, 3, 72, 80)) is None


@pytest.mark.parametrize("factory", ["exiting_model", "halting_model"])
def test_what_a_users_forward_raises_at_the_probe_is_still_theirs(tmp_path: Path, factory: str) -> None:
    """The probe ran the forward outside model_code: sys.exit(3) in it ended export with exit 3, a BaseException
    of theirs with a traceback."""
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(cli, ["export", f"tests.fixtures.user_models:{factory}", "--input-shape",
                                      "1,3,1024,1024", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("deploykit: error: your model "), result.output
    assert not out.exists()
