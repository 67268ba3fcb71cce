"""Checkpoints shipped inside an archive (best.tar, best.pth.gz, a .zip of best.pth), named as such with the
command that extracts them: a tar archive was called "a text file" (its header starts with the member's name)
and a gzip file "a binary file of an unknown kind".
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

TAR = "a tar archive"
COMPRESSED_TAR = "a compressed tar archive"
GZIP = "a gzip-compressed file"
ZIP = "a zip archive of another kind"
CHECKPOINT_NAMES = (".safetensors", ".bin", ".pt", ".pth", ".pth.tar", ".ckpt")
_SCANNED = 200  # members looked at: a big compressed archive is read only as far as that


def archive_kind(file: Path, head: bytes) -> str | None:
    """TAR, COMPRESSED_TAR or GZIP when the file is one (from its first bytes, and tarfile's own test), else
    None."""
    if _is_tar(file):  # read once: for a compressed file it decompresses the start
        return TAR if _uncompressed(head) else COMPRESSED_TAR
    return GZIP if head.startswith(b"\x1f\x8b") else None


def _uncompressed(head: bytes) -> bool:
    return not head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))


def _is_tar(file: Path) -> bool:
    try:
        return tarfile.is_tarfile(file)
    except (OSError, EOFError, tarfile.TarError):
        return False


def _members(file: Path, kind: str) -> list[str]:
    """The first member files' names (none when the archive does not read)."""
    try:
        if kind == ZIP:
            with zipfile.ZipFile(file) as archive:
                return [n for n in archive.namelist()[:_SCANNED] if not n.endswith("/")]
        with tarfile.open(file) as archive:
            names = []
            for member in archive:
                if member.isfile():
                    names.append(member.name)
                if len(names) >= _SCANNED:
                    break
            return names
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError):
        return []


def extraction_fix(file: Path, kind: str) -> str:
    """How to get the checkpoint out of an archive of `kind`: the command, and the checkpoint files it holds
    ("" when `kind` is no archive, or one without a file named like a checkpoint)."""
    if kind == GZIP:
        command = f"gunzip -k {file}" if file.suffix == ".gz" else f"gunzip -c {file} > weights.pt"
        return f"; decompress it ({command}) and give the file that writes"
    if kind not in (TAR, COMPRESSED_TAR, ZIP):
        return ""
    inside = [n for n in _members(file, kind) if n.endswith(CHECKPOINT_NAMES)]
    if not inside:
        return ""
    command = f"unzip {file}" if kind == ZIP else f"tar -xf {file}"
    shown = ", ".join(inside[:3]) + (f" (+{len(inside) - 3} more)" if len(inside) > 3 else "")
    return f"; it holds {shown}: extract it ({command}) and give that file"
