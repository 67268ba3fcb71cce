"""Where outputs may go, checked before any work: never over an existing file without force, never over or
into an input, never into a place that cannot take them.

- `reading(*paths)`: the files and folders the work inside reads. Every output check refuses a path that is one
  of them (compared after resolving links, hard links too), lies inside an input folder, or (for an output
  folder) holds one: no command can overwrite or delete its inputs, with or without --force.
- `check_output_path` / `check_output_dir`: fail before any work when an output cannot be written.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import InputError, OutputExists
from deploykit.io.disk_full import disk_full_error, is_full
from deploykit.io.signals import deferred
from deploykit.io.temporaries import PROBE_PREFIX, inside, sweep_stale


@dataclass(frozen=True)
class _Input:
    given: str  # as the command received it
    real: str  # os.path.realpath: symbolic links and relative forms resolved
    identity: tuple[int, int] | None  # (st_dev, st_ino) of an existing file: hard links are the same file
    folder: bool


_INPUTS: ContextVar[tuple[_Input, ...]] = ContextVar("deploykit_inputs", default=())


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


@contextmanager
def reading(*paths: str | os.PathLike[str] | None) -> Iterator[None]:
    """Declare the inputs of the work inside the block (None entries are skipped; paths that do not exist are
    kept too, by name, since an output must not take their place either)."""
    entries = [_Input(str(p), os.path.realpath(p), _identity(p), os.path.isdir(p)) for p in paths if p is not None]
    token = _INPUTS.set((*_INPUTS.get(), *entries))
    try:
        yield
    finally:
        _INPUTS.reset(token)


def refuse_inputs(out: str | os.PathLike[str], *, folder: bool = False) -> None:
    """InputError when `out` (a file, or with `folder` a folder that will be written into or replaced) is one of
    the declared inputs, lies inside an input folder, or holds an input."""
    real = os.path.realpath(out)
    identity = _identity(out)
    for entry in _INPUTS.get():
        if entry.folder and inside(real, entry.real):
            raise InputError(f"output {out} is inside the input folder {entry.given}; deploykit never writes into "
                             "its inputs: choose an output path outside it")
        if not entry.folder and (real == entry.real or (identity is not None and identity == entry.identity)):
            linked = "" if os.path.abspath(out) == os.path.abspath(entry.given) else " (the same file through a link)"
            raise InputError(f"output {out} is the input {entry.given}{linked}; deploykit never overwrites its "
                             "inputs, even with --force: choose another output path")
        if folder and os.path.exists(entry.real) and inside(entry.real, real):
            raise InputError(f"output folder {out} holds the input {entry.given}; deploykit never replaces or "
                             "writes over its inputs: choose an output folder that holds none of them")


def check_output_path(path: str | os.PathLike[str], *, force: bool) -> Path:
    """Fail before any work is done if `path` cannot be written, exists without `force`, or is an input."""
    if not os.fspath(path):  # `-o ""` (an unset shell variable): Path("") is the current folder
        raise InputError("the output path is empty (an unset variable?); give a file name")
    if os.fspath(path).endswith(("/", os.sep)):  # Path() would drop the slash and write a file named like the folder
        raise InputError(f"output {os.fspath(path)} ends in '/', so it names a folder; give a file path in it")
    out = Path(path)
    _check_name(out)
    refuse_inputs(out)
    sweep_stale(out.parent if str(out.parent) else Path("."))  # a killed run's half-landed set is completed
    if out.is_dir():
        raise InputError(f"output {out} is a directory; give a file name")
    _refuse_special(out)
    if os.path.lexists(out) and not force:  # a link to nowhere exists too: writing would replace it
        raise OutputExists(f"{out} exists already; pass --force to overwrite it")
    parent = out.parent if str(out.parent) else Path(".")
    _check_folder(parent, out)
    return out


_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
            (stat.S_ISSOCK, "a socket"))


def _refuse_special(out: Path) -> None:
    """An output that exists as a device, a pipe or a socket (-o /dev/null): outputs are written beside and renamed
    into place, which with --force would replace the node itself (as root, /dev/null by a regular file)."""
    try:
        mode = os.lstat(out).st_mode
    except OSError:  # absent (or unreadable: the folder check says so)
        return
    kind = next((name for test, name in _SPECIAL if test(mode)), None)
    if kind is not None:
        raise InputError(f"output {out} is {kind}, not a file: deploykit writes a file and renames it into place, "
                         "which would replace it; give a file path")


def check_output_dir(path: str | os.PathLike[str], *, force: bool | None = None) -> Path:
    """Fail before any work is done if folder `path` cannot be made or written: an existing file in its
    place, a file among its parents, or a place nothing can be created in (/proc, a read-only mount), or an
    input folder (or one holding an input). With `force` False an existing folder is refused too (None:
    reusing it is allowed, as deploy re-runs do)."""
    out = Path(path)
    _check_name(out)
    refuse_inputs(out, folder=True)
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


NAME_ROOM = 40  # bytes deploykit adds to an output's name at most: .NAME.deploykit.json.PID.RANDOM.part


def _check_name(out: Path) -> None:
    """Each part of `out` fits the file system's name limit (255 bytes on most), the output's own with room for
    what deploykit adds to it, so a long name fails now in one line, not as ENAMETOOLONG after the work."""
    limit = _name_limit(out)
    for part in out.parts:
        room = NAME_ROOM if part == out.name else 0
        size = len(os.fsencode(part))
        if size + room > limit:
            adds = f", and deploykit adds up to {room} to an output's" if room else ""
            raise InputError(f"output name {part[:40]}... is {size} bytes; this file system takes names of up to "
                             f"{limit} bytes{adds}: give a shorter name")


def check_input_name(path: Path, room: int) -> None:
    """An input file's name leaves `room` bytes for the names deploykit looks for beside it (its sidecar
    NAME.deploykit.json): looking one up fails with ENAMETOOLONG otherwise, after the input was accepted."""
    limit = _name_limit(path)
    size = len(os.fsencode(path.name))
    if size + room > limit:
        raise InputError(f"input name {path.name[:40]}... is {size} bytes; this file system takes names of up to "
                         f"{limit} bytes, and deploykit looks for files named after it, up to {room} bytes longer: "
                         f"rename it to at most {limit - room} bytes")


def _name_limit(path: Path) -> int:
    """The longest name the file system holding `path` takes (255 bytes on most)."""
    for folder in (*path.parents, Path(".")):  # the nearest existing one (Path.exists raises on a long name)
        try:
            return os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return 255


def _check_folder(folder: Path, out: Path) -> None:
    """`folder` exists, is a folder, and a file can really be created in it. os.access is not enough: root
    passes it on read-only folders, and /proc says yes to everyone; a probe file says what will happen."""
    if not folder.exists():
        raise InputError(f"cannot write {out}: folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise InputError(f"cannot write {out}: {folder} is a file, not a folder; choose another output path")
    try:
        with deferred():  # the probe is gone however the command ends
            fd, probe = tempfile.mkstemp(prefix=f"{PROBE_PREFIX}{os.getpid()}.", dir=folder)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        if is_full(exc):
            raise disk_full_error(out, folder, exc, None, 1) from None
        why = "nothing can be created there" if exc.errno == errno.ENOENT else (exc.strerror or str(exc))
        raise InputError(f"cannot write {out}: folder {folder} is not writable ({why}); choose another output "
                         "path") from None


def remove_output(path: str | os.PathLike[str]) -> None:
    """Delete an output of an earlier run (a stale file the new run does not write); never an input."""
    refuse_inputs(path)
    Path(path).unlink(missing_ok=True)
