"""The temporary names deploykit's writers make, the temporary folder, and the sweep that removes what a
process killed outright (SIGKILL) left behind.

Temporary names carry the writer's process id, so the next deploykit writing into the same folder (or $TMPDIR)
removes those of processes that no longer run (`sweep_stale`), and lands the rest of a set whose commit a kill
cut between its renames.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

STAGE_PREFIX = ".deploykit-stage."
PROBE_PREFIX = ".deploykit-probe."
COMMITTING = ".committing"  # in a stage: its entries are complete and being moved into place
# Temporary names deploykit makes (<pid> the writer's process id, <random> tempfile's 8 characters): hidden
# `.<name>.<pid>.<random>.part` files and `.deploykit-stage.<pid>.<random>` / `.deploykit-probe.<pid>.<random>`
# entries beside outputs, `deploykit-<what>-<pid>.<random>` folders in $TMPDIR.
_RANDOM = r"[a-z0-9_]{8}"  # tempfile's random part
TEMPORARY = re.compile(rf"^(?:\..+\.(?P<part>\d+)\.{_RANDOM}\.part"
                       rf"|\.deploykit-(?:stage|probe)\.(?P<stage>\d+)\.{_RANDOM})$")
_SCRATCH = re.compile(rf"^deploykit-[a-z]+-(?P<scratch>\d+)\.{_RANDOM}$")  # only in $TMPDIR


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


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


def sweep_stale(folder: Path) -> None:
    """Remove the temporary files and folders (see TEMPORARY) that a deploykit killed outright left in
    `folder`: those whose process no longer runs. A process id reused since only delays their removal."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    scratch = os.path.realpath(folder) == os.path.realpath(settle_tempdir())
    for name in names:
        match = TEMPORARY.match(name) or (_SCRATCH.match(name) if scratch else None)
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
