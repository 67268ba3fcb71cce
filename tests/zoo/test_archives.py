"""A checkpoint shipped inside an archive (deploykit.zoo.archives) is refused naming the archive, the checkpoint in
it and the command that extracts it: `tar -cf best.tar best.pth` was called "a text file", best.pth.gz "a binary
file of an unknown kind", a zip of best.pth "a zip archive of another kind" with no word of what it holds."""

from __future__ import annotations

import gzip
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from deploykit.errors import CheckpointError
from deploykit.zoo.checkpoints import read_checkpoint


def _tar(mode: str) -> Callable[[Path, Path], None]:
    def pack(inner: Path, out: Path) -> None:
        with tarfile.open(out, mode) as archive:
            archive.add(inner, arcname=f"run1/{inner.name}")
    return pack


def _gzip(inner: Path, out: Path) -> None:
    out.write_bytes(gzip.compress(inner.read_bytes()))


def _zip(inner: Path, out: Path) -> None:
    with zipfile.ZipFile(out, "w") as archive:
        archive.write(inner, f"run1/{inner.name}")


@pytest.mark.parametrize(("pack", "name", "said"), [
    (_tar("w"), "best.tar", "it is a tar archive, not a PyTorch checkpoint"),
    (_tar("w:gz"), "best.tar.gz", "it is a compressed tar archive"),
    (_tar("w:xz"), "best.tar.xz", "it is a compressed tar archive"),
    (_zip, "best.zip", "it is a zip archive of another kind"),
], ids=["tar", "tar.gz", "tar.xz", "zip"])
def test_an_archive_holding_a_checkpoint_names_it_and_the_command_that_extracts_it(
        pack: Callable[[Path, Path], None], name: str, said: str, tmp_path: Path) -> None:
    inner = tmp_path / "best_model.pth"
    torch.save({"conv.weight": torch.zeros(2, 3, 1, 1)}, inner)
    archive = tmp_path / name
    pack(inner, archive)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(archive)
    message = str(info.value)
    command = "unzip" if name.endswith(".zip") else "tar -xf"
    assert said in message and f"it holds run1/best_model.pth: extract it ({command} {archive})" in message


@pytest.mark.parametrize("name", ["best.pth.gz", "weights"])
def test_a_gzip_compressed_checkpoint_says_how_to_decompress_it(name: str, tmp_path: Path) -> None:
    inner = tmp_path / "best.pth"
    torch.save({"conv.weight": torch.zeros(2)}, inner)
    _gzip(inner, tmp_path / name)
    with pytest.raises(CheckpointError, match="it is a gzip-compressed file") as info:
        read_checkpoint(tmp_path / name)
    assert ("gunzip -k" if name.endswith(".gz") else "gunzip -c") in str(info.value)


def test_an_archive_without_a_checkpoint_in_it_is_named_only(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("lr 0.01")
    _tar("w")(tmp_path / "notes.txt", tmp_path / "run.tar")
    with pytest.raises(CheckpointError, match="it is a tar archive, not a PyTorch checkpoint") as info:
        read_checkpoint(tmp_path / "run.tar")
    assert "extract" not in str(info.value)
