"""What the shell hands over: names its locale decodes (`undecodable`), and the standard streams: closed
(`>&-`), a pipe whose reader left (`| head -1`), a full device (`> /dev/full`).

A closed descriptor is reopened on the null device before anything else opens a file (`reopen_closed`):
otherwise the next file deploykit opens takes descriptor 1 or 2, and what native code (torch's exporter, ONNX
Runtime) prints to it lands inside the user's artifact; and sys.stdout is None, which every print fails on.
A write that fails (`write_failure`) ends the command as other command-line tools do: a reader that left ends it
quietly with 141, as SIGPIPE ends `cat` (`set -o pipefail` sees it), a full device is bad input. A terminal
that hung up (`unless_hung_up`) takes what is written to it no longer: the command ends as its SIGHUP says.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# 141, as the shell reports a process that SIGPIPE ended (cat, grep); not 1, which deploykit gives a failed check
BROKEN_PIPE_STATUS = 128 + signal.SIGPIPE
# What a write to a full device fails with; deploykit's own file writes turn these into DiskFull (with the file's
# name), so one without a name is a standard stream's. Not EIO: a read of a failing disk raises it without a name.
_DEVICE_FULL = (errno.ENOSPC, errno.EDQUOT)
_STREAMS = ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY), (2, "stderr", os.O_WRONLY))


def reopen_closed() -> None:
    """Open the null device on each of descriptors 0, 1 and 2 that is closed, and give Python a stream on it."""
    for fd, name, flags in _STREAMS:
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, flags)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        stream = open(fd, "r" if fd == 0 else "w", closefd=False, encoding="utf-8",  # noqa: SIM115  # for good
                      errors="backslashreplace")
        setattr(sys, name, stream)


def write_failure(exc: BaseException) -> str | None:
    """"pipe" when `exc` is a write to a pipe whose reader left, "device" when a write to a full device without a
    file name (the standard streams: deploykit's own files raise DiskFull), else None."""
    if isinstance(exc, BrokenPipeError):
        return "pipe"
    if isinstance(exc, OSError) and exc.errno in _DEVICE_FULL and exc.filename is None:
        return "device"
    return None


@contextmanager
def unless_hung_up() -> Iterator[None]:
    """Drop a write to stdout or stderr whose terminal hung up (EIO: its window or SSH session closed, which also
    sends SIGHUP), and point both streams at the null device: nobody reads them any more, and the command must
    end as the signal says (129 after cleanup), not as a write that failed (exit 1 with a traceback)."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        silence()


def silence() -> None:
    """Point stdout and stderr at the null device, so that the interpreter's last flush of what they still hold
    does not fail again ("Exception ignored ... BrokenPipeError") after the command has ended."""
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(null, fd)
    os.close(null)


def undecodable(name: str) -> str | None:
    """Why `name` (an argument, a file name) holds bytes that cannot go into JSON or reports, and the fix; None when
    it holds none. Either its bytes are not UTF-8, or this Python decodes names as ASCII (a C or POSIX locale
    with PYTHONUTF8=0) and so cannot decode any non-ASCII name, UTF-8 or not."""
    try:
        name.encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeError:
        return "is not valid UTF-8; rename it (deploykit records names in JSON and reports)"
    return (f"is not ASCII, and this Python decodes names as {sys.getfilesystemencoding()} (a C or POSIX locale "
            "with PYTHONUTF8=0); set PYTHONUTF8=1 or a UTF-8 locale (LC_ALL=C.UTF-8)")
