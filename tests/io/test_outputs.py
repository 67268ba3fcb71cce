"""Outputs are written atomically and never overwrite without force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploykit.errors import InputError, OutputExists
from deploykit.io.outputs import atomic_output, check_output_path, sha256_file, write_json


def test_an_existing_output_needs_force(tmp_path: Path) -> None:
    out = write_json(tmp_path / "a.json", {"x": 1}, force=False)
    with pytest.raises(OutputExists, match="--force"):
        write_json(out, {"x": 2}, force=False)
    write_json(out, {"x": 2}, force=True)
    assert json.loads(out.read_text()) == {"x": 2}


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_output(out, force=False) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the exporter crashed")
    assert list(tmp_path.iterdir()) == []


def test_outputs_into_a_missing_folder_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "m.onnx", force=False)
    with pytest.raises(InputError, match="is a directory"):
        check_output_path(tmp_path, force=True)


def test_sha256_names_the_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    assert sha256_file(a) == sha256_file(b) and len(sha256_file(a)) == 64
