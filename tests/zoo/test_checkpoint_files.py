"""Checkpoint files as users have them (deploykit.zoo.checkpoints.read_checkpoint): torch.save's zip and legacy
layouts and .safetensors load to the same tensors; a file of another kind is named for what it is, and a
damaged checkpoint is called damaged, never "re-run with weights_only=False" (torch's advice, wrong for both)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from deploykit.cli import cli
from deploykit.errors import CheckpointError
from deploykit.zoo.checkpoints import read_checkpoint
from deploykit.zoo.sources import load_model

USER = "tests.fixtures.user_models:tiny_segmenter"
FORMATS = ("zip", "legacy", "safetensors")


def _save(state: dict[str, torch.Tensor], path: Path, kind: str) -> None:
    if kind == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=kind == "zip")


def _image(kind: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format=kind)
    return buffer.getvalue()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(FORMATS), shapes=st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3),
                                                      min_size=1, max_size=4),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.int64]), name=st.sampled_from(["w.pt", "w.bin", "w"]))
def test_every_format_reads_back_the_same_tensors(tmp_path: Path, kind: str, shapes: list[list[int]],
                                                 dtype: torch.dtype, name: str) -> None:
    state = {f"layer{i}.weight": (torch.arange(int(np.prod(s)) if s else 1) % 7).reshape(s).to(dtype)
             for i, s in enumerate(shapes)}
    path = tmp_path / f"{kind}_{name}"
    _save(state, path, kind)
    loaded = read_checkpoint(path)
    assert set(loaded) == set(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor)


@pytest.mark.parametrize(("content", "named"), [
    (b"", "an empty file"), (_image("JPEG"), "a JPEG image"), (_image("PNG"), "a PNG image"),
    (b"\x89HDF\r\n\x1a\n" + bytes(100), "an HDF5 file"), (b"epoch,loss\n1,0.5\n", "a text file"),
    (bytes(range(200, 256)) * 3, "a binary file of an unknown kind"),
])
def test_a_file_of_another_kind_is_named(tmp_path: Path, content: bytes, named: str) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"it is {named}") as info:
        read_checkpoint(path)
    assert "weights_only" not in str(info.value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(FORMATS), keep=st.floats(0.05, 0.95))
def test_a_cut_checkpoint_is_called_incomplete(tmp_path: Path, kind: str, keep: float) -> None:
    state = {"conv.weight": torch.randn(16, 8, 3, 3), "conv.bias": torch.randn(16)}
    whole = tmp_path / f"whole_{kind}"
    _save(state, whole, kind)
    data = whole.read_bytes()
    cut = tmp_path / f"cut_{kind}_{int(keep * 1000)}"
    cut.write_bytes(data[: max(16, int(len(data) * keep))])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(cut)
    assert "is it complete?" in str(info.value) or "it is a" in str(info.value), str(info.value)
    assert "weights_only" not in str(info.value)


def test_export_takes_a_safetensors_checkpoint_as_it_takes_torch_save(tmp_path: Path) -> None:
    state = load_model(USER).module.state_dict()
    state = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    outputs = {}
    for kind in ("zip", "safetensors"):
        weights = tmp_path / f"w.{kind}"
        _save(state, weights, kind)
        out = tmp_path / f"{kind}.onnx"
        result = CliRunner().invoke(cli, ["export", USER, "--input-shape", "1,3,32,32", "--weights", str(weights),
                                          "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs[kind] = out.read_bytes()
    import onnx

    def weights_of(blob: bytes) -> dict[str, bytes]:
        return {i.name: i.raw_data for i in onnx.load_from_string(blob).graph.initializer}
    assert weights_of(outputs["zip"]) == weights_of(outputs["safetensors"])


def test_a_legacy_checkpoint_cut_inside_a_class_name_is_called_incomplete(tmp_path: Path) -> None:
    """Cut inside "collections\\nOrderedDict", torch's unpickler names the global "collections.Ordered", which is not
    a class the training code pickled but the end of the file (hypothesis found it, 74 of 5140 cut points)."""
    whole = tmp_path / "whole"
    _save({"conv.weight": torch.randn(4, 2, 3, 3)}, whole, "legacy")
    data = whole.read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(data[: data.index(b"collections\nOrderedDict") + len(b"collections\nOrdered")])
    with pytest.raises(CheckpointError, match="is it complete"):
        read_checkpoint(cut)
