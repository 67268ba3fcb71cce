"""A fault at the n-th file operation of a real `deploykit` process: run as `python -m tests.io.inject ARGS...`.

Before the CLI starts, Python's file operations are wrapped: writes, flushes and closes of files opened for
writing (builtins.open and io.open, which pathlib uses), os.open with O_CREAT (tempfile.mkstemp), os.write,
os.fsync, os.replace / os.rename and os.mkdir. Operations on paths under $DEPLOYKIT_FAULT_UNDER (a list of
folders joined by os.pathsep) are counted, each one logged as "op<TAB>path" to $DEPLOYKIT_FAULT_LOG; the one
numbered $DEPLOYKIT_FAULT_AT (1-based) gets $DEPLOYKIT_FAULT instead:
- an errno name (ENOSPC, EDQUOT, EROFS, EACCES, EPERM, ...): the operation raises OSError with it, as a full
  disk, an exhausted quota, a folder remounted read-only or a file made immutable does;
- a signal name (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGKILL): the process sends it to itself just before the
  operation, as a user or a scheduler would at that moment (SIGKILL: the process dies there, nothing of it runs
  afterwards).
Without $DEPLOYKIT_FAULT the run is clean and the log lists every operation a fault could hit. Writers in C++
(ONNX Runtime's optimized-model writer, OpenVINO's serializer) are out of its reach: the tmpfs tests cover them.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import signal
import sys
from typing import Any

_REAL_OPEN = builtins.open
_COUNT = [0]


def _under(path: Any) -> str | None:
    roots = [r for r in os.environ.get("DEPLOYKIT_FAULT_UNDER", "").split(os.pathsep) if r]
    try:
        real = os.path.realpath(os.fsdecode(path)) if not isinstance(path, int) else \
            os.readlink(f"/proc/self/fd/{path}")
    except (OSError, TypeError, ValueError):
        return None
    return real if any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots) else None


def _tick(op: str, path: Any) -> None:
    real = _under(path)
    if real is None:
        return
    _COUNT[0] += 1
    log = os.environ.get("DEPLOYKIT_FAULT_LOG")
    if log:
        with _REAL_OPEN(log, "a", encoding="utf-8") as handle:
            handle.write(f"{op}\t{real}\n")
    fault = os.environ.get("DEPLOYKIT_FAULT", "")
    if not fault or str(_COUNT[0]) != os.environ.get("DEPLOYKIT_FAULT_AT"):
        return
    if fault.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, fault))
        return
    code = getattr(errno, fault)
    raise OSError(code, os.strerror(code), real)


class _Watched:
    """A file opened for writing whose write, flush and close are counted."""

    def __init__(self, handle: Any, path: Any) -> None:
        self._handle, self._path = handle, path

    def write(self, data: Any) -> Any:
        _tick("write", self._path)
        return self._handle.write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        _tick("flush", self._path)
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            _tick("close", self._path)
        self._handle.close()

    def __enter__(self) -> _Watched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Any:
        return iter(self._handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    handle = _REAL_OPEN(file, mode, *args, **kwargs)
    if isinstance(file, int) or not any(c in mode for c in "wax+") or _under(file) is None:
        return handle
    return _Watched(handle, file)


def install() -> None:
    real_os_open, real_write, real_fsync = os.open, os.write, os.fsync
    real_replace, real_rename, real_mkdir = os.replace, os.rename, os.mkdir

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            _tick("create", path)
        return real_os_open(path, flags, *args, **kwargs)

    def os_write(fd: int, data: Any) -> int:
        _tick("write", fd)
        return real_write(fd, data)

    def os_fsync(fd: Any) -> None:
        _tick("fsync", fd if isinstance(fd, int) else fd.fileno())
        real_fsync(fd)

    def os_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        _tick("rename", dst)
        real_replace(src, dst, *args, **kwargs)

    def os_rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        _tick("rename", dst)
        real_rename(src, dst, *args, **kwargs)

    def os_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        _tick("mkdir", path)
        real_mkdir(path, *args, **kwargs)

    builtins.open = io.open = _open
    os.open, os.write, os.fsync = os_open, os_write, os_fsync
    os.replace, os.rename, os.mkdir = os_replace, os_rename, os_mkdir


if __name__ == "__main__":
    install()
    from deploykit.cli import cli

    cli.main(prog_name="deploykit", args=sys.argv[1:])
