"""A write that failed because the disk is full, or because its place refuses writing, as the one-line error
the user can act on: DiskFull (exit 2) naming the output and the space needed, or InputError naming the
unwritable place (`full_disk_named` wraps a write in either).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploykit.errors import DiskFull, InputError, size_text
from deploykit.io.temporaries import TEMPORARY, inside, settle_tempdir

UNWRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")
NEARLY_FULL = 1 << 20  # bytes free below which a failed write is reported as a full disk (_nearly_full)


def is_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it: exporters and runtimes wrap OSError) is a full disk or quota."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if any(text in str(current) for text in FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def disk_size(path: Path) -> int:
    """Bytes in a file, or in every file under a folder (0 for anything else)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def disk_full_error(out: Path, where: Path, exc: BaseException, needs: int | None, written: int) -> DiskFull:
    folder = where if where.is_dir() else where.parent
    if TEMPORARY.match(folder.name):  # a stage: the user chose the folder it is in (the stage is gone next)
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    need = (f"about {size_text(needs)}" if needs and needs > written else
            f"more than the {size_text(written)} it wrote before the disk filled" if written else "more than that")
    fix = "point TMPDIR at a roomier folder" if inside(os.path.realpath(folder), settle_tempdir()) else \
        "choose another output folder"
    return DiskFull(f"disk full: cannot write {out} ({folder} has {size_text(free)} free; it needs {need}); free some "
                    f"space or {fix}")


@contextmanager
def full_disk_named(out: Path, scratch: Path | None, needs: int | None) -> Iterator[None]:
    """Turn a full disk inside the block into DiskFull naming `out`; `scratch` holds what was written so far
    (None: nothing yet, the disk is in `out`'s folder)."""
    try:
        yield
    except Exception as exc:
        where = scratch if scratch is not None else out.parent
        denied = _refused(exc, [p for p in (out.parent, scratch) if p is not None])
        if denied is not None:
            raise _unwritable(out, denied) from exc
        if not (is_full(exc) or _nearly_full(where)):
            raise
        raise disk_full_error(out, where, exc, needs, disk_size(scratch) if scratch is not None else 0) from exc


def _refused(exc: BaseException, places: list[Path]) -> OSError | None:
    """The OSError in `exc`'s chain that says a path in `places` refuses writing (read-only file system,
    permission denied, an immutable file), or None. An input that cannot be read is not this: only errors
    naming a path inside the output's folder or the scratch folder count."""
    roots = [os.path.realpath(p) for p in places]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in UNWRITABLE_ERRNOS:
            named = [os.path.realpath(os.fsdecode(n)) for n in (current.filename, current.filename2)
                     if isinstance(n, (str, bytes, os.PathLike))]
            if any(inside(n, r) for n in named for r in roots):
                return current
        current = current.__cause__ or current.__context__
    return None


def _unwritable(out: Path, exc: OSError) -> InputError:
    fix = "point TMPDIR at a writable folder" if inside(os.path.realpath(out), settle_tempdir()) else \
        "make it writable or choose another output path"
    return InputError(f"cannot write {out}: {exc.strerror or exc} ({exc.filename}); {fix}")


def _nearly_full(where: Path) -> bool:
    """Whether the disk holding `where` has less than NEARLY_FULL bytes free: some writers report a full disk
    without its errno (ONNX Runtime's optimized-model writer says "Protobuf serialization failed"), so a failure
    while writing there is taken for what it most likely is."""
    folder = where if where.is_dir() else where.parent
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False
