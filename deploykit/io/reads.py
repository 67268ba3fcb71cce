"""The files a user's code reads while it runs, seen as it opens them, with their digests.

deploy keys its model steps on what building the model reads; a factory may read more than its code and
--weights: a config beside it or named in an option or an environment variable, a second weights file, a
vocabulary, a module of a package installed in editable mode elsewhere. Edited, each left a resumed deploy
skipping export, parity and bench on the old model. Python's audit hook (PEP 578 'open' events) sees every file
opened through Python (open, os.open, io.open_code: imports too). Not seen: a file native code opens itself
(safetensors' reader, TorchScript's loader), and which environment variables the code read (one pointed at
another file is not noticed). Hooks cannot be removed: one is installed on first use and records only inside
`recording()`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploykit.io.digests import sha256_file

_RECORDERS: list[set[str]] = []
_HOOKED: list[bool] = []  # whether the hook is installed (a list: no `global` statement needed)
_WRITES = os.O_WRONLY | os.O_RDWR


def _hook(event: str, args: tuple[Any, ...]) -> None:
    """Note a file opened for reading while a recording is active. It must never raise: it runs inside open()."""
    if event != "open" or not _RECORDERS:
        return
    try:
        path, mode, flags = args
        writes = bool(flags & _WRITES) if mode is None else any(c in mode for c in "wax+")
        if isinstance(path, (str, bytes)) and not writes:  # not a file descriptor; a file written is an output
            name = os.path.abspath(os.fsdecode(path))
            for seen in _RECORDERS:
                seen.add(name)
    except Exception:
        pass


@contextmanager
def recording() -> Iterator[set[str]]:
    """The absolute names of the files opened for reading inside the block (filtered by `user_files`)."""
    if not _HOOKED:
        sys.addaudithook(_hook)
        _HOOKED.append(True)
    seen: set[str] = set()
    _RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _RECORDERS.remove(seen)


@functools.cache
def _not_users() -> tuple[str, ...]:
    """Folders whose files are not the user's: Python's standard library, installed distributions and their
    scripts (the `deploykit` command's; an editable install's source lies elsewhere, so it is kept), deploykit's
    own, and the kernel's /proc, /sys and /dev."""
    schemes = [sysconfig.get_paths(), sysconfig.get_paths(vars={"base": sys.base_prefix,
                                                                "platbase": sys.base_exec_prefix})]
    keys = ("stdlib", "platstdlib", "purelib", "platlib", "scripts")
    roots = {scheme[key] for scheme in schemes for key in keys}
    roots |= {*site.getsitepackages(), site.getusersitepackages(), str(Path(__file__).parents[1])}
    return (*(os.path.join(os.path.realpath(root), "") for root in roots), "/proc/", "/sys/", "/dev/")


def user_files(seen: Iterable[str]) -> list[Path]:
    """The user's regular files among `seen`; a module's bytecode stands for its source (the source is what the
    user edits; the bytecode is rewritten only when the module is imported again)."""
    kept = set()
    for name in seen:
        if name.endswith(".pyc"):
            try:
                name = importlib.util.source_from_cache(name)
            except ValueError:  # bytecode without a source (an sourceless distribution's)
                continue
        real = os.path.realpath(name)
        if not real.startswith(_not_users()) and os.path.isfile(real):
            kept.add(Path(real))
    return sorted(kept)


@dataclass
class ReadSet:
    """The files a watched block read, named relative to `base` (the folder of the user's code) where they lie
    under it, so a project folder moved or copied elsewhere is checked at its new place, absolute elsewhere."""

    base: Path | None = None
    digests: dict[str, str] = field(default_factory=dict)  # name -> sha256, of everything watched so far
    # files the step's key holds already (--weights): recorded here too, by an absolute name for a zoo model, a
    # moved project folder reran every step ("w.pt ... changed") where its key found the same weights
    keyed: frozenset[Path] = frozenset()

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Record what the block reads, and the source of every module imported so far: a module imported
        before the block is not opened in it (finding a package.module:factory imports its parent packages, and
        an __init__ there may import a package installed in editable mode elsewhere)."""
        with recording() as seen:
            yield
        modules = [file for module in list(sys.modules.values())
                   if isinstance(file := getattr(module, "__file__", None), str)]
        self.digests.update({self._name(p): sha256_file(p) for p in user_files([*seen, *modules])
                             if p not in self.keyed})

    def changed(self, recorded: Mapping[str, str]) -> str | None:
        """The first of `recorded` (an earlier run's digests) that is gone or differs now; None if none does."""
        for name, digest in sorted(recorded.items()):
            path = Path(name) if Path(name).is_absolute() or self.base is None else self.base / name
            if not path.is_file() or sha256_file(path) != digest:
                return name
        return None

    def _name(self, path: Path) -> str:
        base = self.base.resolve() if self.base is not None else None
        return path.relative_to(base).as_posix() if base is not None and path.is_relative_to(base) else str(path)
