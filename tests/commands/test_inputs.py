"""What a command's input arguments protect (deploykit.commands._inputs): the files behind them, not names."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.commands._inputs import _input_paths
from deploykit.errors import InputError
from deploykit.io.output_checks import check_output_dir, check_output_path, reading


def test_names_that_are_no_file_protect_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _input_paths("msinet") == [] and _input_paths("photos") == [] and _input_paths("gone.onnx") == []
    with reading(*_input_paths("msinet")):
        assert check_output_dir("msinet") == Path("msinet")  # `deploy msinet --out msinet`


def test_a_file_protects_what_belongs_to_it(tmp_path: Path) -> None:
    (tmp_path / "m.xml").write_text("<net/>")
    (tmp_path / "m.bin").write_bytes(b"\0")
    found = {Path(p).name for p in _input_paths(str(tmp_path / "m.xml"))}
    assert found == {"m.xml", "m.bin", "m.xml.deploykit.json"}
    with reading(*_input_paths(str(tmp_path / "m.xml"))), pytest.raises(InputError, match=r"m\.bin is the input"):
        check_output_path(tmp_path / "m.bin", force=True)
    assert _input_paths("tests.fixtures.user_models:tiny_segmenter")[0].endswith("tests/fixtures/user_models.py")


def test_an_input_whose_sidecar_name_cannot_exist_is_bad_input(tmp_path: Path) -> None:
    """A 255-byte model name is legal, but looking for its sidecar (NAME.deploykit.json) raised ENAMETOOLONG:
    `deploykit bench <255-byte name>.onnx` ended as a bug (exit 3)."""
    from click.testing import CliRunner

    from deploykit.cli import cli

    model = tmp_path / ("m" * 250 + ".onnx")
    model.write_bytes(b"not read")
    for args in (["bench", str(model)], ["build-engine", "--fp16", "-o", str(tmp_path / "a.ort.onnx"), str(model)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "rename it to at most 240 bytes" in result.output
