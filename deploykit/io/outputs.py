"""Writing outputs: atomically (temporary file + rename), never over an existing file without force."""

from __future__ import annotations

import errno
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
    _check_folder(parent, out)
    return out


def check_output_dir(path: str | os.PathLike[str], *, force: bool | None = None) -> Path:
    """Fail before any work is done if folder `path` cannot be made or written: an existing file in its
    place, a file among its parents, or a place nothing can be created in (/proc, a read-only mount). With
    `force` False an existing folder is refused too (None: reusing it is allowed, as deploy re-runs do)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {out} is a file; give a folder path")
    if out.is_dir():
        if force is False:
            raise OutputExists(f"{out} exists already; pass --force to replace it")
        _check_folder(out, out)
        return out
    existing = out.parent if str(out.parent) else Path(".")
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    _check_folder(existing, out)
    return out


def _check_folder(folder: Path, out: Path) -> None:
    """`folder` exists, is a folder, and a file can really be created in it. os.access is not enough: root
    passes it on read-only folders, and /proc says yes to everyone; a probe file says what will happen."""
    if not folder.exists():
        raise InputError(f"cannot write {out}: folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise InputError(f"cannot write {out}: {folder} is a file, not a folder; choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".deploykit-probe.", dir=folder)
    except OSError as exc:
        why = "nothing can be created there" if exc.errno == errno.ENOENT else (exc.strerror or str(exc))
        raise InputError(f"cannot write {out}: folder {folder} is not writable ({why}); choose another output "
                         "path") from None
    os.close(fd)
    os.unlink(probe)


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
