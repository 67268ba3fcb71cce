"""scripts/setup.sh prints one line per step and nothing of pip's unless pip fails (issue 22 item 4); the demo
installs the openvino extra and races the CPU backends (item 3). setup.sh runs for real in a copy of the scripts
folder, with a stand-in interpreter that creates the venv and answers pip noisily, as setuptools' "Editable
installation" block did."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAND_IN = """#!/usr/bin/env bash
echo "$1" >> "$(dirname "$0")/calls"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "Obtaining file:///clone"; echo "BuildBackendWarning: Editable installation." >&2
  [ -z "${PIP_FAILS:-}" ]; exit $?
fi
exit 0
"""


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    python = tmp_path / "python3"
    python.write_text(STAND_IN)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def _setup(clone: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(clone / "scripts" / "setup.sh"), "plots,openvino", *flags],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": str(clone / "python3"), **env},
                          timeout=60)


def test_the_warm_up_imports_unless_told_not_to(clone: Path) -> None:
    """demo.sh's commands byte-compile what they import themselves; the warm-up would import it all once more."""
    calls = clone / ".venv" / "bin" / "calls"
    assert _setup(clone).returncode == 0
    assert calls.read_text().splitlines() == ["-m", "-c"]  # pip, then the warm-up's import
    calls.unlink()
    assert _setup(clone, "--no-warm-up").returncode == 0
    assert calls.read_text().splitlines() == ["-m"]


def test_setup_prints_one_line_per_step_and_none_of_pips(clone: Path) -> None:
    first = _setup(clone)
    assert first.returncode == 0 and first.stderr == ""
    assert first.stdout.splitlines() == ["setup: creating .venv",
                                         "setup: installing deploykit[plots,openvino] into .venv"]
    again = _setup(clone)  # the venv exists: one step
    assert again.stdout.splitlines() == ["setup: installing deploykit[plots,openvino] into .venv"]


def test_a_failing_pip_shows_its_output_and_fails(clone: Path) -> None:
    failed = _setup(clone, PIP_FAILS="1")
    assert failed.returncode == 1
    assert "Obtaining file:///clone" in failed.stderr and "Editable installation" in failed.stderr
    assert failed.stderr.rstrip().endswith("setup failed: see pip's output above")


def test_the_demo_installs_openvino_and_races_the_backends_as_the_readme_shows() -> None:
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    extras = re.search(r"^bash scripts/setup.sh (\S+)( --no-warm-up)?$", demo, flags=re.M)
    assert extras is not None and "openvino" in extras.group(1).split(",")
    command = shlex.split(re.sub(r"\\\n\s*", " ", demo[demo.index("deploykit deploy"):]).replace('"$@"', ""))
    assert command[command.index("--backend") + 1] == "auto"
    readme = (ROOT / "README.md").read_text()
    shown = re.search(r"```bash\n(deploykit deploy deeplabv3plus_mobilenetv2 .*?)```", readme, flags=re.S)
    assert shown is not None and shlex.split(re.sub(r"\\\n\s*", " ", shown.group(1))) == command
