"""Writing outputs: atomically (temporary file + rename), never over an existing file without force."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploykit.errors import InputError, OutputExists


def check_output_path(path: str | os.PathLike[str], *, force: bool) -> Path:
    """Fail before any work is done if `path` cannot be written or exists without `force`."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"output {out} is a directory; give a file name")
    if out.exists() and not force:
        raise OutputExists(f"{out} exists already; pass --force to overwrite it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {out}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {out}: folder {parent} is not writable; choose another -o path")
    return out


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, force: bool) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it into place, on error remove it."""
    out = check_output_path(path, force=force)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        if out.exists() and not force:  # appeared while we worked
            raise OutputExists(f"{out} appeared while writing; pass --force to overwrite it")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str, *, force: bool) -> Path:
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, *, force: bool) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", force=force)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
