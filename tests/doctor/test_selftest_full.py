"""`deploykit doctor --selftest --full [--evidence DIR]` through the tensorrt double (10.x and 11.x profiles):
one verdict, every check reported whatever fails, an evidence folder that says it is simulated. The zoo model
runs as its tiny variant here; nothing timed under the double is a TensorRT figure, and no test here is timed
(benchmarks/selftest_full_double.py measures the run)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import deploykit.commands.doctor as doctor_command
from deploykit.cli import cli
from deploykit.doctor import selftest_checks, selftest_full
from deploykit.doctor.selftest_checks import FullSelfTestResult, Session, Verdict
from deploykit.errors import BuildError
from tests.fakes.fixtures import TrtDouble, install_double

CHECKS = ["export + ONNX Runtime reference", "fp32 build", "fp32 parity", "fp32 audit", "fp16 build", "fp16 parity",
          "fp16 audit", "int8 build", "int8 parity", "int8 audit", "fp16 CUDA-graph replay",
          "speed: INT8 vs FP16 vs FP32", "tiny export (ConvTranspose, Add, Concat, Resize)",
          "tiny fp16 (dynamic, timing cache)", "tiny int8, FP32 remainder", "tiny int8, FP16 remainder",
          "version-compatible FP16, --require-precision", "argmax head (uint8 class map)",
          "dynamic shapes min/opt/max, CUDA graphs", "shape outside the profile", "timing cache read back"]
ENGINES = {"deeplabv3plus_mobilenetv2.fp32", "deeplabv3plus_mobilenetv2.fp16", "deeplabv3plus_mobilenetv2.int8",
           "tiny.fp16", "tiny.int8.fp32", "tiny.int8.fp16", "tiny.vc", "tiny.argmax", "tiny.again"}


def _tiny_zoo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The zoo model's test variant, so the whole self-test stays a test-suite run."""
    original = selftest_full.full_selftest

    def tiny(progress: Callable[[object], None] | None = None, **kwargs: object) -> FullSelfTestResult:
        return original(progress, size=(64, 64), options={"width_multiplier": 0.125, "num_classes": 5}, calib_n=4,
                        **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(doctor_command, "full_selftest", tiny)  # what the command calls


def test_full_selftest_and_its_evidence(trt_double: TrtDouble, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _tiny_zoo(monkeypatch)
    evidence = tmp_path / "evidence"
    result = CliRunner().invoke(cli, ["doctor", "--selftest", "--full", "--evidence", str(evidence)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("TensorRT TEST DOUBLE") and "not TensorRT results" in lines[0]
    assert "+testdouble" in lines[0] and lines[-2].startswith(f"verdict: all {len(CHECKS)} checks passed")
    assert [line[7:].split("  ")[0] for line in lines[1:-2]] == CHECKS
    speed = next(line for line in lines if "speed:" in line)
    assert "test double, not TensorRT" in speed and "ship" not in speed  # no advice from CPU host times
    assert {b["profiling_verbosity"] for b in trt_double.state.builds} == {"DETAILED"}
    # The evidence: simulated said first, every engine's raw inspector JSON with the keys its audit used
    readme = (evidence / "README.txt").read_text().splitlines()
    assert readme[0].startswith("SIMULATED") and "Nothing in this folder is a TensorRT result" in readme[0]
    summary = json.loads((evidence / "summary.json").read_text())
    assert summary["simulated"] and summary["passed"] and [c["name"] for c in summary["checks"]] == CHECKS
    assert {"cosine", "pixel_agreement"} <= set(summary["checks"][2]["figures"])
    speed_figures = summary["checks"][11]["figures"]
    assert set(speed_figures["median_compute_ms"]) == {"fp32", "fp16", "int8"}
    # timed by the one timing core: round-robin (as many rounds of each engine), the machine's load beside them
    assert len(set(speed_figures["samples"].values())) == 1 and min(speed_figures["samples"].values()) >= 10
    assert speed_figures["machine_load"]["rounds"] >= 10
    versions = json.loads((evidence / "environment.json").read_text())["versions"]
    assert versions["tensorrt"] != "" and "deploykit" in versions
    assert "simulated" in json.loads((evidence / "gpu.json").read_text())["built_on"]["gpu"]
    engines = evidence / "engines"
    assert {p.name.removesuffix(".inspector.json") for p in engines.glob("*.inspector.json")} == ENGINES
    layout = "I/O Tensors" if trt_double.profile == "11" else "Bindings"
    for name in ENGINES:
        assert layout in json.loads((engines / f"{name}.inspector.json").read_text())
        audit = json.loads((engines / f"{name}.audit.json").read_text())
        assert audit["layer_keys"] and "Inputs" in audit["layer_keys"] and audit["keys_used"]
        assert json.loads((engines / f"{name}.sidecar.json").read_text())["backend"] == "tensorrt"
    log = (evidence / "log.txt").read_text()
    assert "self-test: ok timing cache read back" in log and "TensorRT errors and warnings" in log
    assert (evidence / "verdict.txt").read_text().startswith("TensorRT TEST DOUBLE")


def test_a_failing_or_crashing_check_never_ends_the_run(runner_no_skimage: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without scikit-image (synthetic scenes), with every audit impossible to pass and the CUDA-graph replay
    raising a RuntimeError, the verdict still lists every check: FAIL or could not run, with the exception's
    type and first line, never a traceback."""
    install_double(monkeypatch, "10")  # one profile: the passing run covers both
    _tiny_zoo(monkeypatch)
    monkeypatch.setattr(selftest_checks, "AUDIT_SHARE", 1.01)

    def boom(*_args: object) -> Verdict:
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nsecond line")

    monkeypatch.setattr(selftest_full, "_replay", boom)
    result = CliRunner().invoke(cli, ["doctor", "--selftest", "--full", "--json"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    report = json.loads(result.stdout)["selftest_full"]
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == CHECKS and report["images"].startswith("synthetic scenes")
    assert checks["fp16 audit"]["passed"] is False and checks["fp16 parity"]["passed"] is True
    replay = checks["fp16 CUDA-graph replay"]
    assert replay["passed"] is None and replay["detail"] == ("could not run: RuntimeError: CUDA error: an illegal "
                                                             "memory access was encountered")
    vc = checks["version-compatible FP16, --require-precision"]
    assert vc["passed"] is False and vc["detail"].startswith("ConfigConflict: --require-precision 1.01")
    assert checks["argmax head (uint8 class map)"]["passed"] is True  # later checks ran
    assert checks["timing cache read back"]["detail"] == "not run: tiny fp16 (dynamic, timing cache) did not pass"
    assert "did not pass" in result.stderr and "fp16 CUDA-graph replay" in result.stderr


@pytest.fixture()
def runner_no_skimage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # `import skimage` raises ImportError


def test_the_session_reports_pass_fail_could_not_run_and_not_run() -> None:
    said: list[object] = []
    result = FullSelfTestResult("10.16.1.11", "GPU", "m")
    session = Session(result, said.append)

    def fails() -> Verdict:
        raise BuildError("TensorRT failed to build an engine from m.onnx: out of memory\nmore")

    def crashes() -> Verdict:
        raise KeyError("engine")

    assert session.check("a", lambda: Verdict(True, "fine"))
    assert not session.check("b", fails)
    assert not session.check("c", crashes)
    assert not session.check("d", lambda: Verdict(True, "never"), needs=["a", "b"])
    marks = [(c.name, c.passed, c.detail) for c in result.checks]
    assert marks == [("a", True, "fine"),
                     ("b", False, "BuildError: TensorRT failed to build an engine from m.onnx: out of memory"),
                     ("c", None, "could not run: KeyError: 'engine'"), ("d", None, "not run: b did not pass")]
    text = result.describe()
    assert "1 failed (b)" in text and "2 could not run (c, d)" in text and "--evidence DIR" in text
    assert text.splitlines()[0].startswith("TensorRT 10.16.1.11")  # a real TensorRT says nothing about a double


def test_evidence_needs_full_and_a_new_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["doctor", "--selftest", "--evidence", str(tmp_path)])
    assert result.exit_code == 2 and "--selftest --full --evidence DIR" in result.output
    (tmp_path / "old.txt").write_text("x")
    result = CliRunner().invoke(cli, ["doctor", "--selftest", "--full", "--evidence", str(tmp_path)])
    assert result.exit_code == 2 and "is not empty" in result.output


def test_evidence_says_why_tensorrt_could_not_run(trt_double_no_gpu: TrtDouble, tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    result = CliRunner().invoke(cli, ["doctor", "--selftest", "--full", "--evidence", str(evidence)])
    assert result.exit_code == 2 and "cannot construct a builder" in result.output
    summary = json.loads((evidence / "summary.json").read_text())
    assert "cannot construct a builder" in summary["could_not_run"] and summary["checks"] == []
    assert (evidence / "README.txt").read_text().startswith("SIMULATED")
