"""Writing outputs: atomically, never over an existing file without force, never over an input, never half.

- `reading(*paths)`: the files and folders the work inside reads. Every output check below refuses a path that
  is one of them (compared after resolving links, hard links too), lies inside an input folder, or (for an
  output folder) holds one: no command can overwrite or delete its inputs, with or without --force.
- `check_output_path` / `check_output_dir`: fail before any work when an output cannot be written.
- `atomic_output`: one file, written beside its final path and renamed into place.
- `staged`: several files that land together or not at all (an artifact, its companions and its sidecar): written
  into a hidden folder beside them and moved into place with SIGINT/SIGTERM held (deploykit.io.signals).
- `scratch_folder`: a temporary folder in $TMPDIR, removed however the work ends.
A full disk while writing any of them (writing, flushing, syncing or renaming) is DiskFull (exit 2) naming the
path and the space needed; a place that refuses the write (read-only, permission denied) is InputError (exit 2)
naming it; either way nothing is left behind. A file lands only after its bytes are on disk (fsync), so a power
cut never leaves a truncated output under the final name. A process killed outright (SIGKILL) cannot clean up:
the temporary names carry its process id, and the next deploykit writing into the same folder (or $TMPDIR)
removes those of processes that no longer run (`_sweep_stale`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.errors import DiskFull, InputError, OutputExists, size_text
from deploykit.io.signals import deferred

STAGE_PREFIX = ".deploykit-stage."
PROBE_PREFIX = ".deploykit-probe."
COMMITTING = ".committing"  # in a stage: its entries are complete and being moved into place
UNWRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
# Temporary names this module makes (<pid> the writer's process id, <random> tempfile's 8 characters): hidden
# `.<name>.<pid>.<random>.part` files and `.deploykit-stage.<pid>.<random>` / `.deploykit-probe.<pid>.<random>`
# entries beside outputs, `deploykit-<what>-<pid>.<random>` folders in $TMPDIR.
_RANDOM = r"[a-z0-9_]{8}"  # tempfile's random part
_TEMPORARY = re.compile(rf"^(?:\..+\.(?P<part>\d+)\.{_RANDOM}\.part"
                        rf"|\.deploykit-(?:stage|probe)\.(?P<stage>\d+)\.{_RANDOM})$")
_SCRATCH = re.compile(rf"^deploykit-[a-z]+-(?P<scratch>\d+)\.{_RANDOM}$")  # only in $TMPDIR
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")
NEARLY_FULL = 1 << 20  # bytes free below which a failed write is reported as a full disk (_nearly_full)


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


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def refuse_inputs(out: str | os.PathLike[str], *, folder: bool = False) -> None:
    """InputError when `out` (a file, or with `folder` a folder that will be written into or replaced) is one of
    the declared inputs, lies inside an input folder, or holds an input."""
    real = os.path.realpath(out)
    identity = _identity(out)
    for entry in _INPUTS.get():
        if entry.folder and _inside(real, entry.real):
            raise InputError(f"output {out} is inside the input folder {entry.given}; deploykit never writes into "
                             "its inputs: choose an output path outside it")
        if not entry.folder and (real == entry.real or (identity is not None and identity == entry.identity)):
            linked = "" if os.path.abspath(out) == os.path.abspath(entry.given) else " (the same file through a link)"
            raise InputError(f"output {out} is the input {entry.given}{linked}; deploykit never overwrites its "
                             "inputs, even with --force: choose another output path")
        if folder and os.path.exists(entry.real) and _inside(entry.real, real):
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
    _sweep_stale(out.parent if str(out.parent) else Path("."))  # a killed run's half-landed set is completed
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
    limit = 255
    for folder in (*out.parents, Path(".")):  # the nearest existing one (Path.exists raises on a long name)
        try:
            limit = os.pathconf(folder, "PC_NAME_MAX")
            break
        except (OSError, ValueError):
            continue
    for part in out.parts:
        room = NAME_ROOM if part == out.name else 0
        size = len(os.fsencode(part))
        if size + room > limit:
            adds = f", and deploykit adds up to {room} to an output's" if room else ""
            raise InputError(f"output name {part[:40]}... is {size} bytes; this file system takes names of up to "
                             f"{limit} bytes{adds}: give a shorter name")


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
        if _is_full(exc):
            raise _disk_full(out, folder, exc, None, 1) from None
        why = "nothing can be created there" if exc.errno == errno.ENOENT else (exc.strerror or str(exc))
        raise InputError(f"cannot write {out}: folder {folder} is not writable ({why}); choose another output "
                         "path") from None


def _is_full(exc: BaseException) -> bool:
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


def _disk_full(out: Path, where: Path, exc: BaseException, needs: int | None, written: int) -> DiskFull:
    folder = where if where.is_dir() else where.parent
    if _TEMPORARY.match(folder.name):  # a stage: the user chose the folder it is in (the stage is gone next)
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 0
    need = (f"about {size_text(needs)}" if needs and needs > written else
            f"more than the {size_text(written)} it wrote before the disk filled" if written else "more than that")
    fix = "point TMPDIR at a roomier folder" if _inside(os.path.realpath(folder), settle_tempdir()) else \
        "choose another output folder"
    return DiskFull(f"disk full: cannot write {out} ({folder} has {size_text(free)} free; it needs {need}); free some "
                    f"space or {fix}")


@contextmanager
def _full_disk_named(out: Path, scratch: Path | None, needs: int | None) -> Iterator[None]:
    """Turn a full disk inside the block into DiskFull naming `out`; `scratch` holds what was written so far
    (None: nothing yet, the disk is in `out`'s folder)."""
    try:
        yield
    except Exception as exc:
        where = scratch if scratch is not None else out.parent
        denied = _refused(exc, [p for p in (out.parent, scratch) if p is not None])
        if denied is not None:
            raise _unwritable(out, denied) from exc
        if not (_is_full(exc) or _nearly_full(where)):
            raise
        raise _disk_full(out, where, exc, needs, disk_size(scratch) if scratch is not None else 0) from exc


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
            if any(_inside(n, r) for n in named for r in roots):
                return current
        current = current.__cause__ or current.__context__
    return None


def _unwritable(out: Path, exc: OSError) -> InputError:
    fix = "point TMPDIR at a writable folder" if _inside(os.path.realpath(out), settle_tempdir()) else \
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


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, force: bool, needs: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it into place, on error remove it. `needs`: the
    size to expect, if known, for the message when the disk fills."""
    out = check_output_path(path, force=force)
    tmp: Path | None = None
    try:
        with deferred(), _full_disk_named(out, None, needs):
            _sweep_stale(out.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".part",
                                            dir=out.parent or ".")
            os.close(fd)
            tmp = Path(tmp_name)
        with _full_disk_named(out, tmp, needs):
            yield tmp
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
            _on_disk(tmp)
            with deferred():
                if os.path.lexists(out) and not force:  # appeared while we worked
                    raise OutputExists(f"{out} appeared while writing; pass --force to overwrite it")
                os.replace(tmp, out)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


class Stage:
    """A hidden folder beside a set of outputs: `path(final)` is where to write `final` for now."""

    def __init__(self, folder: Path, *, force: bool, needs: int | None) -> None:
        self.folder, self.force, self.needs = folder, force, needs
        self.root: Path | None = None

    def open(self) -> None:
        with deferred(), _full_disk_named(self.folder / STAGE_PREFIX, None, self.needs):
            _sweep_stale(self.folder)
            self.root = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}.", dir=self.folder))

    def path(self, final: str | os.PathLike[str]) -> Path:
        """Where to write `final` (a file, or a folder for the stage to create) until the stage commits."""
        final_path = Path(final)
        if self.root is None or final_path.parent.resolve() != self.folder.resolve():
            raise ValueError(f"{final_path} is not an output of the stage in {self.folder}")
        return self.root / final_path.name

    def final(self, staged: str | os.PathLike[str]) -> Path:
        """The final path of a file written into the stage."""
        return self.folder / Path(staged).name

    def commit(self) -> list[Path]:
        """Move everything staged into place (files, sidecars last, and folders, which replace the folder of
        their name), with SIGINT/SIGTERM held: all land or none."""
        assert self.root is not None
        entries = sorted((p for p in self.root.iterdir() if p.name != COMMITTING),
                         key=lambda p: p.name.endswith(".json"))
        finals = [self.folder / p.name for p in entries]
        for entry, final in zip(entries, finals, strict=True):
            if entry.is_dir():
                check_output_dir(final, force=None if self.force else False)
            else:
                check_output_path(final, force=self.force)
        for entry in entries:
            if entry.is_file():
                os.chmod(entry, 0o666 & ~_umask())
            _on_disk(entry)
        landed: list[Path] = []
        with deferred():
            # From here the set is decided: if the process is killed outright between the renames, the next
            # run that writes into this folder lands the rest (_sweep_stale) instead of leaving half a set.
            (self.root / COMMITTING).touch()
            try:
                for entry, final in zip(entries, finals, strict=True):
                    if entry.is_dir():
                        shutil.rmtree(final, ignore_errors=True)
                    os.replace(entry, final)
                    landed.append(final)
            except BaseException:  # a rename refused (read-only, full): the ones that landed go too
                for final in landed:
                    if final.is_dir():
                        shutil.rmtree(final, ignore_errors=True)
                    else:
                        final.unlink(missing_ok=True)
                raise
        return finals

    def discard(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


@contextmanager
def staged(folder: str | os.PathLike[str], *, force: bool, needs: int | None = None) -> Iterator[Stage]:
    """Outputs in `folder` that land together: write each to `stage.path(final)`; when the block succeeds they
    are moved into place (see Stage.commit); when it fails, or a signal or a full disk ends it, none is."""
    stage = Stage(Path(folder) if str(folder) else Path("."), force=force, needs=needs)
    try:
        stage.open()
        assert stage.root is not None
        with _full_disk_named(stage.folder, stage.root, needs):
            yield stage
            stage.commit()
    finally:
        stage.discard()


@contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder in $TMPDIR for intermediate files, removed however the block ends; a full disk there
    is DiskFull naming the folder."""
    folder: Path | None = None
    try:
        with deferred(), _full_disk_named(Path(settle_tempdir()) / prefix, None, None):
            _sweep_stale(Path(settle_tempdir()))
            folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}."))
        with _full_disk_named(folder, folder, None):
            yield folder
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _on_disk(path: Path) -> None:
    """fsync a file (or each file of a folder) before it is renamed into place: after a power cut or a crash of
    the machine, the final name holds the whole file or the old one, never a truncated one."""
    for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it runs
        return True
    return True


def settle_tempdir() -> str:
    """The temporary folder, chosen as tempfile would ($TMPDIR, $TEMP, $TMP, then /tmp, /var/tmp, /usr/tmp: the
    first writable) but without its probe: tempfile.gettempdir() tests each candidate by writing and deleting a
    file of a random name, and a process killed between the two leaves that file behind, which nothing can tell
    from a user's (the faults sweep found one after `bench` was killed at its second file operation). Once
    tempfile.tempdir is set, neither deploykit nor a library in its process probes again; this module asks for
    the folder only through here."""
    if tempfile.tempdir is None:
        candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")] + ["/tmp", "/var/tmp", "/usr/tmp"]
        for folder in candidates:
            if folder and os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
                tempfile.tempdir = os.path.abspath(folder)
                break
    return tempfile.gettempdir()


def _sweep_stale(folder: Path) -> None:
    """Remove the temporary files and folders (see _TEMPORARY) that a deploykit killed outright left in
    `folder`: those whose process no longer runs. A process id reused since only delays their removal."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    scratch = os.path.realpath(folder) == os.path.realpath(settle_tempdir())
    for name in names:
        match = _TEMPORARY.match(name) or (_SCRATCH.match(name) if scratch else None)
        if match is None:
            continue
        pid = int(next(g for g in match.groups() if g is not None))
        if pid == os.getpid() or _running(pid):
            continue
        stale = folder / name
        try:
            if (stale / COMMITTING).is_file():
                _land_the_rest(stale, folder)
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        except OSError:  # not ours to remove after all (read-only, another user's): left as it was
            pass


def _land_the_rest(stage: Path, folder: Path) -> None:
    """Finish the commit of a stage whose process was killed between its renames: what is left in it is
    complete (written and synced before the first rename), so it lands beside what already did."""
    for entry in sorted(stage.iterdir(), key=lambda p: p.name.endswith(".json")):
        if entry.name == COMMITTING:
            continue
        final = folder / entry.name
        if entry.is_dir():
            shutil.rmtree(final, ignore_errors=True)
        os.replace(entry, final)


def remove_output(path: str | os.PathLike[str]) -> None:
    """Delete an output of an earlier run (a stale file the new run does not write); never an input."""
    refuse_inputs(path)
    Path(path).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str, *, force: bool) -> Path:
    with atomic_output(path, force=force, needs=len(text.encode("utf-8"))) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, *, force: bool) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", force=force)


_DIGESTS: dict[tuple[int, int, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The file's sha256, cached per process by (device, inode, size, modification time), which a rename keeps:
    verifying a sidecar on each load of an artifact the process built or opened before hashes it once (about
    0.2 s per 100 MB on one core)."""
    stat = os.stat(path)
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _DIGESTS.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]
