"""`deploykit doctor` reports a backend whose install is broken as unusable, with the import's own words, not
as "not installed" with a `pip install` that changes nothing; and a backend's import ending the process with
SystemExit is reported, not the doctor's exit."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit import environment
from deploykit.backends.base import forget_availability
from deploykit.backends.openvino.runner import load_openvino
from deploykit.backends.tensorrt.common import import_tensorrt
from deploykit.cli import cli
from deploykit.errors import BackendUnavailable, not_installed

BROKEN = {  # what a package's __init__ raises when it is installed and broken
    "tensorrt": 'raise ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory")',
    "openvino": "from openvino._pyopenvino import Core",  # the native module is missing
}


@pytest.fixture(autouse=True)
def probe_afresh() -> Iterator[None]:
    """Availability is probed once per process: these tests swap the packages, so they probe before and after."""
    forget_availability()
    yield
    forget_availability()


@pytest.fixture
def broken_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, body in BROKEN.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body + "\n")
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("broken_backends")
def test_doctor_reports_a_broken_install_as_unusable_with_its_reason() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    backends = json.loads(result.output)["backends"]
    assert backends["tensorrt"]["state"] == "unusable" and "libnvinfer.so.10" in backends["tensorrt"]["reason"]
    assert backends["openvino"]["state"] == "unusable" and "_pyopenvino" in backends["openvino"]["reason"]
    assert "pip install" not in backends["tensorrt"]["reason"] + backends["openvino"]["reason"]


@pytest.mark.usefixtures("broken_backends")
def test_loading_a_broken_backend_says_reinstall_not_install() -> None:
    for load in (import_tensorrt, load_openvino):
        with pytest.raises(BackendUnavailable, match=r"failed: .*reinstall"):
            load()


def test_a_backend_import_that_exits_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("raise SystemExit(4)\n")
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(cli, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["backends"]["tensorrt"]["state"] == "unusable"


def test_only_the_package_itself_missing_is_not_installed() -> None:
    assert not_installed(ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt"), "tensorrt")
    assert not not_installed(ModuleNotFoundError("x", name="tensorrt_libs"), "tensorrt")
    assert not not_installed(ModuleNotFoundError("x", name="openvino._pyopenvino"), "openvino")
    assert not not_installed(ImportError("libnvinfer.so.10: cannot open shared object file"), "tensorrt")


@pytest.mark.parametrize("args", [["--selftest"], ["--selftest", "--full"]])
def test_a_selftest_that_cannot_run_says_why_in_one_line(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt: ModuleNotFoundError, as when absent
    result = CliRunner().invoke(cli, ["doctor", *args])
    assert result.exit_code == 2, result.output
    assert "cannot run: TensorRT is not installed: pip install 'deploykit[tensorrt]'" in result.output, result.output


def test_doctor_names_the_cpu_flags_that_shape_its_timings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README: `deploykit doctor` prints the CPU model and flags (VNNI, AVX-512 decide INT8's weights and
    speed-ups), in the table and in --json."""
    monkeypatch.setattr(environment, "cpu_flags", lambda: {"avx2", "fma", "avx512_vnni", "sse2"})
    table = CliRunner().invoke(cli, ["doctor"])
    assert table.exit_code == 0, table.output
    assert "flags: avx2, avx512_vnni, fma" in table.output
    data = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).output)
    assert data["cpu_flags"] == ["avx2", "avx512_vnni", "fma"]
