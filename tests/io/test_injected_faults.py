"""Faults delivered from outside, at the n-th file operation of a real `deploykit` process (tests/io/inject.py):
hypothesis chooses the command, the fault and the operation it hits.

Faults: SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGKILL just before the operation; ENOSPC and EDQUOT (a full disk, a
quota) and EROFS, EACCES, EPERM (a folder remounted read-only, permission taken away, an immutable file) raised by
it, on write, flush, close, fsync, create, mkdir or rename, in the output folder, $TMPDIR or the calibration cache.
After each: the inputs are byte for byte as before; what landed is complete and valid (ONNX loads and passes the
checker, JSON parses, an artifact opens with its sidecar) or absent; the exit status is the contract's (2 for a
refused or full write, 128 + the signal's number for the others but SIGKILL) with one error line; no temporary file
is left beside the outputs or in $TMPDIR, except by SIGKILL, whose leftovers the plain rerun removes (or, for a set
killed between its renames, lands whole). Then the plain rerun finishes (deploy resumes), and deploy's artifacts
equal an uninterrupted run's. A fault at the calibration cache must not fail the build, which says that the cache
was not written.

A handful of fixed cases (each a family that once broke) run by default; the hypothesis sweep is `slow`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.io.faults import REPO, THIRD_PARTY_TMP, Flow, artifact_pairs, make_inputs, one_error_line, snapshot

ERRNOS = ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM")
SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGKILL")
CACHE = "/cache/"

FLOWS = {
    "export": Flow("export", ("export", "tests.fixtures.user_models:tiny_segmenter", "--input-shape", "1,3,32,32",
                              "--no-simplify", "-o", "{o}/net.onnx"), ("net.onnx",)),
    "build-fp32": Flow("build-fp32", ("build-engine", "{d}/net.onnx", "-o", "{o}/net.ort.onnx"),
                       ("net.ort.onnx", "net.ort.onnx.deploykit.json")),
    "build-fp16": Flow("build-fp16", ("build-engine", "{d}/net.onnx", "--fp16", "--calib-data", "{d}/calib",
                                      "-o", "{o}/net.fp16.ort.onnx"),
                       ("net.fp16.ort.onnx", "net.fp16.ort.onnx.deploykit.json", "net.fp16.onnx")),
    "build-int8": Flow("build-int8", ("build-engine", "{d}/net.onnx", "--int8", "--calib-data", "{d}/calib",
                                      "--calib-n", "2", "--accuracy-budget", "pixel_agreement>=0.5",
                                      "-o", "{o}/net.int8.ort.onnx"),
                       ("net.int8.ort.onnx", "net.int8.ort.onnx.deploykit.json", "net.int8.onnx")),
    "parity-report": Flow("parity-report", ("parity", "tests.fixtures.user_models:tiny_segmenter", "{d}/net.onnx",
                                            "--inputs", "{d}/calib", "--threads", "1", "--report", "{o}/parity.md"),
                          ("parity.md",)),
    "bench-out": Flow("bench-out", ("bench", "{d}/net.onnx", "--iterations", "3", "--warmup", "0", "--threads", "1",
                                    "--no-roofline", "-o", "{o}/bench.json"), ("bench.json",)),
    "deploy": Flow("deploy", ("deploy", "tests.fixtures.user_models:tiny_segmenter", "--input-shape", "1,3,32,32",
                              "--out", "{o}/deploy", "--precisions", "fp32,int8", "--calib-data", "{d}/calib",
                              "--calib-n", "2", "--inputs", "{d}/calib", "--bench-seconds", "0.01", "--threads", "1"),
                   (), resumable=True),
}


@dataclass(frozen=True)
class Run:
    code: int
    stderr: str
    ops: list[tuple[str, str]]  # (operation, path relative to the run's root) as the child counted them


def run(flow: Flow, inputs: Path, root: Path, fault: str = "", at: int = 0) -> Run:
    """`deploykit` with `flow`'s arguments in a child whose operation `at` gets `fault` (none: a clean run).
    Its output folder, $TMPDIR and calibration cache are root/out, root/tmp, root/cache."""
    for sub in ("out", "tmp", "cache"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    log = root / "ops.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "TMPDIR": str(root / "tmp"), "DEPLOYKIT_CACHE_DIR": str(root / "cache"),
           "PYTHONPATH": str(REPO), "DEPLOYKIT_FAULT_UNDER": os.pathsep.join(str(root / s) for s in ("out", "tmp",
                                                                                                   "cache")),
           "DEPLOYKIT_FAULT_LOG": str(log), "DEPLOYKIT_FAULT": fault, "DEPLOYKIT_FAULT_AT": str(at)}
    child = subprocess.run([sys.executable, "-m", "tests.io.inject", *flow.argv(inputs, root / "out")], cwd=root,
                           env=env, capture_output=True, text=True, timeout=600)
    ops = [tuple(line.split("\t", 1)) for line in log.read_text().splitlines()] if log.exists() else []
    return Run(child.returncode, child.stderr, [(op, path.replace(str(root), "")) for op, path in ops])


def leftovers(root: Path) -> list[str]:
    hidden = [str(p) for p in (root / "out").rglob(".*") if p.name != ".deploykit-steps.json"]
    cache = [str(p) for p in (root / "cache").rglob(".*")]
    return hidden + cache + [str(p) for p in (root / "tmp").iterdir() if p.name not in THIRD_PARTY_TMP]


def invalid_outputs(root: Path) -> list[str]:
    """Outputs that landed but are not whole: ONNX that does not load or check, JSON that does not parse, an
    artifact without its sidecar or one that does not open with it."""
    problems = artifact_pairs(root / "out")
    for path in [*(root / "out").rglob("*"), *(root / "cache").rglob("*")]:
        if (path.name.startswith(".") and path.name != ".deploykit-steps.json") or not path.is_file():
            continue
        try:
            if path.suffix == ".onnx":
                onnx.checker.check_model(onnx.load(str(path)))
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix in (".md", ".html") and not path.read_text(encoding="utf-8").strip():
                problems.append(f"{path} is empty")
        except Exception as exc:  # any failure to read it back is the finding
            problems.append(f"{path}: {type(exc).__name__}: {exc}")
    return problems


def landed(flow: Flow, root: Path) -> bool:
    names = [name for name in flow.finals if (root / "out" / name).exists()]
    assert names in ([], list(flow.finals)), f"partial outputs: {names}"
    return bool(names)


def deploy_artifacts(root: Path) -> dict[str, str]:
    """Deploy's deterministic outputs by hash: the exported model and the built artifacts with their graphs."""
    folder = root / "out" / "deploy"
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.onnx"))}


def expected_status(fault: str, op: str, path: str) -> set[int]:
    """What the contract allows for `fault` at operation `op` on `path`. A fault the work survives may end in 0:
    the calibration cache (it only saves time), a third party's temporary file in $TMPDIR, a signal that is held
    while outputs land and delivered after (then the outputs are whole)."""
    statuses = {0} if path.startswith(CACHE) or (path.startswith("/tmp/") and "deploykit-" not in path) else set()
    if fault in ERRNOS:
        return statuses | {2}
    number = getattr(signal, fault)
    return statuses | {0, -number, 128 + number} if fault == "SIGKILL" else statuses | {0, 128 + number}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("injected-inputs"))


_CLEAN: dict[str, tuple[Run, dict[str, str]]] = {}


def clean(name: str, inputs: Path, root: Path) -> tuple[Run, dict[str, str]]:
    """The uninterrupted run of a flow (once per session): its operations, and deploy's artifacts."""
    if name not in _CLEAN:
        folder = root / f"clean-{name}"
        result = run(FLOWS[name], inputs, folder)
        assert result.code == 0, result.stderr
        _CLEAN[name] = (result, deploy_artifacts(folder) if name == "deploy" else {})
    return _CLEAN[name]


def check_fault(name: str, inputs: Path, root: Path, fault: str, at: int) -> None:
    flow = FLOWS[name]
    clean_run, clean_artifacts = clean(name, inputs, root.parent)
    before = snapshot(inputs)
    result = run(flow, inputs, root, fault, at)
    # The operation the fault hit, from this run's own log: the order of operations in threads and third-party
    # code ($TMPDIR files of torch's) can differ from the clean run's.
    op, path = (result.ops if len(result.ops) >= at else clean_run.ops)[at - 1]
    where = (name, fault, at, op, path)
    assert result.code in expected_status(fault, op, path), (where, result.stderr[-2000:])
    assert snapshot(inputs) == before, (where, "an input changed")
    killed = fault == "SIGKILL"  # nothing of the process ran afterwards: its rerun cleans up (checked below)
    assert killed or not invalid_outputs(root), (where, invalid_outputs(root))
    done = not killed and landed(flow, root)
    if result.code not in (0, -signal.SIGKILL):
        lines = one_error_line(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("deploykit: "), (where, lines)
        assert "Traceback" not in result.stderr and "a bug in deploykit" not in result.stderr, (where, lines)
    if result.code == 0 and path.startswith(CACHE) and fault in ERRNOS:
        assert "calibration cache not written" in result.stderr, (where, result.stderr[-1000:])
    if fault != "SIGKILL":
        assert not leftovers(root), (where, leftovers(root))
    if done and not flow.resumable:  # complete outputs exist: the plain rerun refuses to replace them
        return
    again = run(flow, inputs, root)
    refused = killed and not flow.resumable and "exists already" in again.stderr  # what was killed had landed
    assert again.code == 0 or (again.code == 2 and refused), (where, again.stderr[-2000:])
    assert landed(flow, root) or flow.resumable, (where, "the rerun left no outputs")
    assert not leftovers(root), (where, "after the rerun", leftovers(root))
    assert not invalid_outputs(root), (where, "after the rerun", invalid_outputs(root))
    assert snapshot(inputs) == before, (where, "the rerun changed an input")
    if name == "deploy":
        assert deploy_artifacts(root) == clean_artifacts, (where, "the resumed deploy differs")


def first(name: str, inputs: Path, root: Path, op: str, where: str, nth: int = 1) -> int:
    """The number of the nth operation `op` on a path holding `where` in the flow's clean run."""
    ops = clean(name, inputs, root)[0].ops
    hits = [k + 1 for k, (o, p) in enumerate(ops) if o == op and where in p]
    assert len(hits) >= nth, (name, op, where, ops)
    return hits[nth - 1]


# Fixed representatives, one per family that broke before the fixes of this module's commit (exit 3 "a bug in
# deploykit" for a refused rename or fsync; SIGKILL leftovers that stayed forever; an artifact left without its
# sidecar by a kill between the renames; a silent unwritten calibration cache; SIGHUP, which was not handled).
# The default run keeps four (about 40 s); the others are `slow`.
_SLOW = pytest.mark.slow
REPRESENTATIVES = [
    ("export", "EROFS", "rename", "/out/net.onnx", 1),
    pytest.param("export", "EDQUOT", "fsync", "/out/", 1, marks=_SLOW),
    pytest.param("export", "SIGKILL", "rename", "/out/net.onnx", 1, marks=_SLOW),
    ("build-int8", "EACCES", "rename", "/cache/calibration/", 1),
    pytest.param("build-int8", "EPERM", "rename", "/out/net.int8.ort.onnx", 1, marks=_SLOW),
    ("build-int8", "SIGKILL", "rename", "/out/net.int8.onnx", 1),
    ("build-int8", "SIGHUP", "rename", "/out/net.int8.onnx", 1),  # held while the set lands: once exit -1, no word
    pytest.param("bench-out", "ENOSPC", "close", "/out/", 1, marks=_SLOW),
]


@pytest.mark.parametrize(("name", "fault", "op", "where", "nth"), REPRESENTATIVES)
def test_a_fault_at_one_operation_keeps_the_contract(name: str, fault: str, op: str, where: str, nth: int,
                                                     inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.getbasetemp() / "injected"
    check_fault(name, inputs, base / f"{name}-{fault}-{op}", fault, first(name, inputs, base, op, where, nth))


@pytest.mark.slow
def test_a_kill_at_every_rename_of_a_set_leaves_it_whole_after_the_rerun(
        inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGKILL before each of the renames that land build-engine's artifact, precision graph and sidecar."""
    base = tmp_path_factory.getbasetemp() / "injected"
    ops = clean("build-int8", inputs, base)[0].ops
    for at in [k + 1 for k, (o, p) in enumerate(ops) if o == "rename" and p.count("/") == 2 and p.startswith("/out")]:
        check_fault("build-int8", inputs, base / f"kill-rename-{at}", "SIGKILL", at)


@st.composite
def _faults(draw: st.DrawFn) -> tuple[str, str, int]:
    name = draw(st.sampled_from(sorted(FLOWS)))
    fault = draw(st.sampled_from(ERRNOS + SIGNALS))
    return name, fault, draw(st.integers(1, 10_000))


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_faults())
def test_any_fault_at_any_operation_of_any_command_keeps_the_contract(
        case: tuple[str, str, int], inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    name, fault, pick = case
    base = tmp_path_factory.getbasetemp() / "injected"
    ops = clean(name, inputs, base)[0].ops
    at = 1 + pick % len(ops)
    root = base / f"any-{name}-{fault}-{at}"
    shutil.rmtree(root, ignore_errors=True)  # hypothesis replays a case when it shrinks one that failed
    check_fault(name, inputs, root, fault, at)
