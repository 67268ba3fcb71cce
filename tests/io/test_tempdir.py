"""deploykit chooses the temporary folder without writing into it (deploykit.io.temporaries.settle_tempdir):
tempfile.gettempdir() probes each candidate with a file of a random name, and a process killed between its write
and its delete leaves that file where nothing can tell it from a user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import sys
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith({folder!r}):
        print("wrote", args[0])
sys.addaudithook(hook)
{setup}
import tempfile
print("chose", tempfile.gettempdir())
"""


def _run(folder: Path, setup: str, env: dict[str, str]) -> list[str]:
    code = PROBE.format(folder=str(folder), setup=setup)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, **env})
    return result.stdout.splitlines()


def test_the_temporary_folder_is_chosen_without_a_probe_file(tmp_path: Path) -> None:
    settled = _run(tmp_path, "from deploykit.io.temporaries import settle_tempdir; settle_tempdir()",
                   {"TMPDIR": str(tmp_path)})
    assert settled == [f"chose {tmp_path}"]
    probed = _run(tmp_path, "", {"TMPDIR": str(tmp_path)})  # what the stdlib alone does (why this exists)
    assert any(line.startswith("wrote") for line in probed) and probed[-1] == f"chose {tmp_path}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only folders")
def test_an_unwritable_tmpdir_falls_back_as_tempfile_would(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    lines = _run(tmp_path, "from deploykit.io.temporaries import settle_tempdir; settle_tempdir()",
                 {"TMPDIR": str(locked), "TEMP": str(tmp_path)})
    assert lines == [f"chose {tmp_path}"]


def test_a_missing_tmpdir_falls_back_as_tempfile_would(tmp_path: Path) -> None:
    lines = _run(tmp_path, "from deploykit.io.temporaries import settle_tempdir; settle_tempdir()",
                 {"TMPDIR": str(tmp_path / "gone"), "TEMP": str(tmp_path)})
    assert lines == [f"chose {tmp_path}"]
