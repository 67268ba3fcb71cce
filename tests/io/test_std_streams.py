"""The standard streams as shells hand them over (deploykit.io.std_streams): a pipe whose reader left ends a
command quietly with 141, a full device is bad input (2) in one line, a closed descriptor is not taken by a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOYKIT = [sys.executable, "-m", "deploykit"]


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.parametrize("args", [["models"], ["models", "--json"], ["export", "--help"]])
def test_a_reader_that_left_ends_the_command_quietly_with_141(args: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # `deploykit models | head -1` once head has ended
    try:
        result = subprocess.run(DEPLOYKIT + args, stdout=write, stderr=subprocess.PIPE, text=True, env=_env(),
                                timeout=120)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["models", "--json"], ["--help"]])
def test_a_full_device_as_stdout_is_bad_input_in_one_line(args: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(DEPLOYKIT + args, stdout=full, stderr=subprocess.PIPE, text=True, env=_env(),
                                timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("deploykit: error: cannot write the output") and result.stderr.count("\n") == 1


def test_a_closed_stdout_and_stderr_are_not_taken_by_the_next_file(tmp_path: Path) -> None:
    code = ("import sys; from deploykit.io.std_streams import reopen_closed; reopen_closed(); "
            f"f = open({str(tmp_path / 'out')!r}, 'w'); print('chatter'); sys.stderr.write('more'); "
            "f.write(str(f.fileno())); f.close()")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=60,
                   preexec_fn=lambda: [os.close(fd) for fd in (1, 2)])  # `>&- 2>&-`
    assert int((tmp_path / "out").read_text()) > 2


def test_a_command_with_stderr_closed_ends_as_it_would_with_it_open(tmp_path: Path) -> None:
    """Its progress lines went to a sys.stderr that was None: exit 3 (a bug) for a factory that is bad input."""
    args = ["export", "tests.fixtures.user_models:raising_factory", "--input-shape", "1x3x32x32", "-o",
            str(tmp_path / "m.onnx")]
    result = subprocess.run(DEPLOYKIT + args, env=_env(), timeout=120, stdout=subprocess.DEVNULL,
                            preexec_fn=lambda: os.close(2))  # `2>&-`
    assert result.returncode == 2 and not list(tmp_path.iterdir())


def test_a_utf8_name_under_an_ascii_locale_says_to_fix_the_locale(tmp_path: Path) -> None:
    """LC_ALL=C with PYTHONUTF8=0 makes Python decode every non-ASCII argument to surrogates: `é.onnx` was
    refused as "not valid UTF-8; rename the file" although its bytes are UTF-8 and the locale is the fix."""
    model = tmp_path / "é.onnx"
    model.write_bytes(b"not read")
    env = {**_env(), "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run([*DEPLOYKIT, "lint", str(model)], capture_output=True, text=True, env=env, timeout=120,
                            errors="replace")
    assert result.returncode == 2 and "set PYTHONUTF8=1 or a UTF-8 locale" in result.stderr
    undecodable_bytes = subprocess.run([*DEPLOYKIT, "lint", os.fsdecode(b"caf\xe9.onnx")], capture_output=True,
                                       text=True, env=_env(), timeout=120)
    assert undecodable_bytes.returncode == 2 and "is not valid UTF-8; rename it" in undecodable_bytes.stderr
