"""Writing outputs: atomically, never half (where they may go: deploykit.io.output_checks).

- `atomic_output`: one file, written beside its final path and renamed into place.
- `staged`: several files that land together or not at all (an artifact, its companions and its sidecar): written
  into a hidden folder beside them and moved into place with SIGINT/SIGTERM held (deploykit.io.signals).
- `scratch_folder`: a temporary folder in $TMPDIR, removed however the work ends.
A full disk while writing any of them (writing, flushing, syncing or renaming) is DiskFull (exit 2) naming the
path and the space needed; a place that refuses the write (read-only, permission denied) is InputError (exit 2)
naming it (deploykit.io.disk_full); either way nothing is left behind. A file lands only after its bytes are on
disk (fsync), so a power cut never leaves a truncated output under the final name. A process killed outright
cannot clean up: deploykit.io.temporaries sweeps what it left.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploykit.errors import OutputExists
from deploykit.io.digests import carry
from deploykit.io.disk_full import full_disk_named
from deploykit.io.output_checks import check_output_dir, check_output_path
from deploykit.io.signals import deferred
from deploykit.io.temporaries import COMMITTING, STAGE_PREFIX, settle_tempdir, sweep_stale


@contextmanager
def atomic_output(path: str | os.PathLike[str], *, force: bool, needs: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it into place, on error remove it. `needs`: the
    size to expect, if known, for the message when the disk fills."""
    out = check_output_path(path, force=force)
    tmp: Path | None = None
    try:
        with deferred(), full_disk_named(out, None, needs):
            sweep_stale(out.parent)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".part",
                                            dir=out.parent or ".")
            os.close(fd)
            tmp = Path(tmp_name)
        with full_disk_named(out, tmp, needs):
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
        with deferred(), full_disk_named(self.folder / STAGE_PREFIX, None, self.needs):
            sweep_stale(self.folder)
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
        before = {entry: os.stat(entry) for entry in entries if entry.is_file()}  # to carry their digests
        for entry in entries:
            if entry.is_file():
                os.chmod(entry, 0o666 & ~_umask())
            _on_disk(entry)
        landed: list[Path] = []
        with deferred():
            # From here the set is decided: if the process is killed outright between the renames, the next
            # run that writes into this folder lands the rest (sweep_stale) instead of leaving half a set.
            (self.root / COMMITTING).touch()
            try:
                for entry, final in zip(entries, finals, strict=True):
                    if entry.is_dir():
                        shutil.rmtree(final, ignore_errors=True)
                    os.replace(entry, final)
                    landed.append(final)
                    if entry in before:
                        carry(before[entry], final)
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
        with full_disk_named(stage.folder, stage.root, needs):
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
        with deferred(), full_disk_named(Path(settle_tempdir()) / prefix, None, None):
            sweep_stale(Path(settle_tempdir()))
            folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}."))
        with full_disk_named(folder, folder, None):
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike[str], text: str, *, force: bool) -> Path:
    with atomic_output(path, force=force, needs=len(text.encode("utf-8"))) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_text(data: Any) -> str:
    """`data` as strict JSON, the one form deploykit writes and prints: a non-finite number (a metric of an
    output holding inf) is null, since JSON has no NaN or Infinity and strict parsers (JSON.parse, jq) refuse
    Python's bare NaN; what JSON cannot hold otherwise is its str()."""
    return json.dumps(_finite(data), indent=2, sort_keys=True, default=str, allow_nan=False)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def write_json(path: str | os.PathLike[str], data: Any, *, force: bool) -> Path:
    return write_text(path, json_text(data) + "\n", force=force)
