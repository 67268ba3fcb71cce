"""The fault-injection harness of tests/io/test_faults.py: the flows, how a fault is injected, and the invariants.

A fault (SIGINT, SIGTERM, SIGHUP or SIGQUIT at the k-th progress event, a terminal that closes, or a full disk
at the k-th write) must leave:
- the input folder byte for byte as it was;
- no partial final output: a flow's outputs land together or not at all (an artifact with its sidecar and its
  precision graph), and what landed loads (its sidecar belongs to it);
- no temporary file in the output folder or in $TMPDIR (ONNX Runtime's own telemetry session file `.ses`, which
  its import writes to $TMPDIR since 1.32's POSIX telemetry, is not deploykit's and is ignored);
- a plain rerun that works.
"""

from __future__ import annotations

import builtins
import errno
import getpass
import hashlib
import io
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

import deploykit.commands._options as options_module
from deploykit.backends.base import FILE_SUFFIXES
from deploykit.cli import cli
from deploykit.io.sidecar import SIDECAR_SUFFIX

USER = "tests.fixtures.user_models:tiny_segmenter"
# ONNX Runtime's telemetry session file (see the module docstring); torch's inductor cache, which torch.export
# (the dynamo exporter) creates once per user and keeps for later runs.
THIRD_PARTY_TMP = {".ses", f"torchinductor_{getpass.getuser()}"}
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Flow:
    name: str
    args: tuple[str, ...]  # {d}: the input folder, {o}: the output folder
    finals: tuple[str, ...]  # outputs that land together (relative to {o}); () for deploy's folder
    resumable: bool = False  # deploy: a rerun resumes, so what landed before stays

    def argv(self, inputs: Path, out: Path) -> list[str]:
        return [a.format(d=inputs, o=out) for a in self.args]


FLOWS = {
    "export": Flow("export", ("export", USER, "--input-shape", "1,3,64,64", "--no-simplify", "-o", "{o}/net.onnx"),
                   ("net.onnx",)),
    "build-fp16": Flow("build-fp16", ("build-engine", "{d}/net.onnx", "--fp16", "--calib-data", "{d}/calib",
                                      "--no-calib-cache", "-o", "{o}/net.fp16.ort.onnx"),
                       ("net.fp16.ort.onnx", "net.fp16.ort.onnx" + SIDECAR_SUFFIX, "net.fp16.onnx")),
    "build-int8": Flow("build-int8", ("build-engine", "{d}/net.onnx", "--int8", "--calib-data", "{d}/calib",
                                      "--calib-n", "2", "--no-calib-cache", "-o", "{o}/net.int8.ort.onnx"),
                       ("net.int8.ort.onnx", "net.int8.ort.onnx" + SIDECAR_SUFFIX, "net.int8.onnx")),
    # single outputs written at the end of other work (redteam): a report, a bench JSON, a Triton repository
    "parity-report": Flow("parity-report", ("parity", USER, "{d}/net.onnx", "--inputs", "{d}/calib", "--threads",
                                            "1", "--report", "{o}/parity.md"), ("parity.md",)),
    "bench-out": Flow("bench-out", ("bench", "{d}/net.onnx", "--iterations", "3", "--warmup", "0", "--threads", "1",
                                    "--no-roofline", "-o", "{o}/bench.json"), ("bench.json",)),
    "package": Flow("package", ("package", "--triton", "{d}/net.onnx", "--out", "{o}/repo"), ("repo",)),
    "deploy": Flow("deploy", ("deploy", USER, "--input-shape", "1,3,64,64", "--out", "{o}/deploy", "--precisions",
                              "fp32,int8", "--calib-data", "{d}/calib", "--calib-n", "2", "--inputs", "{d}/calib",
                              "--bench-seconds", "0.01", "--threads", "1"), (), resumable=True),
}


def make_inputs(folder: Path) -> Path:
    """net.onnx of the tiny user model and a folder of three 64x64 images."""
    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.zoo.sources import load_model

    folder.mkdir(parents=True, exist_ok=True)
    assert onnx_from_torch(load_model(USER), folder / "net.onnx", input_shape=(1, 3, 64, 64), simplify=False).passed
    (folder / "calib").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "calib" / f"{name}.png")
    return folder


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


def leftovers(out: Path, tmp: Path) -> list[str]:
    """Temporary files deploykit left: hidden files in the output tree (deploy's step record is an output) and
    anything in $TMPDIR."""
    hidden = [str(p) for p in out.rglob(".*") if p.name != ".deploykit-steps.json"]
    return hidden + [str(p) for p in tmp.iterdir() if p.name not in THIRD_PARTY_TMP]


def artifact_pairs(out: Path) -> list[str]:
    """Problems with what landed: an artifact without its sidecar or a sidecar without its artifact, a
    precision graph without its artifact, and any artifact that does not load."""
    from deploykit.targets.resolve import open_target

    problems = []
    sidecars = {p for p in out.rglob("*" + SIDECAR_SUFFIX)}
    artifacts = {p for p in out.rglob("*") if p.is_file() and p.name.endswith(FILE_SUFFIXES)
                 and not p.name.endswith(SIDECAR_SUFFIX) and ".ort." in p.name}
    for artifact in artifacts:
        if Path(str(artifact) + SIDECAR_SUFFIX) not in sidecars:
            problems.append(f"{artifact} has no sidecar")
        else:
            try:
                open_target(str(artifact))
            except Exception as exc:  # any failure to load is the finding
                problems.append(f"{artifact} does not load: {exc}")
    for sidecar in sidecars:
        if Path(str(sidecar)[: -len(SIDECAR_SUFFIX)]) not in artifacts:
            problems.append(f"{sidecar} has no artifact")
    for graph in out.rglob("*.int8.onnx"):
        if not any(a.name.startswith(graph.name[: -len(".onnx")]) for a in artifacts):
            problems.append(f"precision graph {graph} has no artifact")
    return problems


def check_after_fault(flow: Flow, inputs: Path, out: Path, tmp: Path, before: dict[str, str]) -> None:
    assert snapshot(inputs) == before, "an input changed"
    assert not leftovers(out, tmp), leftovers(out, tmp)
    assert not artifact_pairs(out), artifact_pairs(out)
    if flow.finals:
        landed = [name for name in flow.finals if (out / name).exists()]
        assert landed in ([], list(flow.finals)), f"partial outputs: {landed}"


def one_error_line(result_stderr: str) -> list[str]:
    return [line for line in result_stderr.splitlines() if line.strip() and not line.startswith(("…", "warning:"))]


# -- in-process injection ------------------------------------------------------------------------------------


Point = tuple[str, int]  # the n-th run of events of one shape (see distinct_points)
Trigger = int | str | Point | None  # the k-th event or write, the first whose text holds this, a Point, or never


def _shape(event: str) -> str:
    """An event without what differs between runs of one flow: figures, and paths (each run has its folder)."""
    return re.sub(r"[\d.]+", "#", re.sub(r"/\S+", "<path>", event))


def _fires(when: Trigger, seen: list[str]) -> bool:
    if isinstance(when, int):
        return len(seen) == when
    if isinstance(when, tuple):
        return len(seen) in distinct_events(seen) and not _load_dependent(seen[-1]) \
            and distinct_points(seen)[-1] == when
    return when is not None and when in seen[-1] and not any(when in s for s in seen[:-1])


def _send(sig: int, where: str) -> None:
    """Send `sig` to this process. Outside deploykit's handlers it would end this process (a pytest-xdist worker,
    twice in CI with no trace; SIGQUIT with a core dump): say where instead."""
    assert signal.getsignal(sig) not in (signal.SIG_DFL, signal.default_int_handler), \
        f"{where} came while deploykit did not handle signal {sig}"
    os.kill(os.getpid(), sig)


@contextmanager
def signal_at_event(when: Trigger, sig: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Count the CLI's progress events; at the one `when` names, send `sig` to this process (delivered as a
    real signal, at the point the library reported progress). Yields the events seen."""
    events: list[str] = []
    drawer = options_module._DRAWER

    def counting(event: Any) -> None:
        events.append(str(event))
        drawer(event)
        if _fires(when, events):
            assert threading.current_thread() is threading.main_thread(), f"event {event} came from a thread"
            _send(sig, f"event {len(events)} ({event})")

    monkeypatch.setattr(options_module, "_DRAWER", counting)
    yield events


class _FullFile:
    """A file object whose writes count towards a full disk (see full_disk_at_write)."""

    def __init__(self, handle: Any, name: str, tick: Callable[[str], None]) -> None:
        self._handle, self._name, self._tick = handle, name, tick

    def write(self, data: Any) -> Any:
        self._tick(self._name)
        return self._handle.write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


@contextmanager
def full_disk_at_write(when: Trigger, monkeypatch: pytest.MonkeyPatch, under: Path) -> Iterator[list[str]]:
    """Patch Python's open (builtins.open and io.open, which pathlib uses) so that the write `when` names (the
    k-th, or the first into a file whose path holds it) to a file under `under` raises ENOSPC, as a full disk
    does. Yields the files written, one entry per write. Files elsewhere (OpenVINO's telemetry in ~/intel) are
    not counted: they are not deploykit's."""

    def full(name: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    with _at_write(when, monkeypatch, under, full) as writes:
        yield writes


@contextmanager
def signal_at_write(when: Trigger, sig: int, monkeypatch: pytest.MonkeyPatch, under: Path) -> Iterator[list[str]]:
    """As full_disk_at_write, but the write `when` names sends `sig` to this process first: a signal in the
    middle of writing, for commands that report no progress (package)."""
    with _at_write(when, monkeypatch, under, lambda name: _send(sig, f"the write to {name}")) as writes:
        yield writes


@contextmanager
def _at_write(when: Trigger, monkeypatch: pytest.MonkeyPatch, under: Path,
              fault: Callable[[str], None]) -> Iterator[list[str]]:
    root = str(under.resolve())
    writes: list[str] = []
    real_open = builtins.open

    def tick(name: str) -> None:
        writes.append(name)
        if _fires(when, writes):
            fault(name)

    def patched(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(file, int) or not any(c in mode for c in "wax+") or not os.path.realpath(file).startswith(root):
            return handle
        return _FullFile(handle, str(file), tick)

    monkeypatch.setattr(builtins, "open", patched)
    monkeypatch.setattr(io, "open", patched)
    yield writes


def invoke(argv: list[str]) -> Result:
    try:
        return CliRunner().invoke(cli, argv)
    except KeyboardInterrupt as escaped:  # past click (which turns one inside into exit 1): it would end pytest's
        # worker with no trace ("node down: Not properly terminated", seen in CI), so fail with where it came from
        where = "".join(traceback.format_exception(escaped, limit=-8))
        pytest.fail(f"{type(escaped).__name__} escaped the CLI for deploykit {' '.join(argv)}:\n{where}")


# -- subprocess injection -------------------------------------------------------------------------------------


def run_with_signal(argv: list[str], k: int | None, sig: int, *, cwd: Path, tmp: Path,
                    prefix: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    """Run `deploykit ARGV` in a child process (started through `prefix`, e.g. nohup); send `sig` when its k-th
    progress line arrives. Returns (exit status, the progress lines seen, the last lines of stderr)."""
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO), "DEPLOYKIT_CACHE_DIR": str(tmp.parent / "c")}
    child = subprocess.Popen([*prefix, sys.executable, "-m", "deploykit.cli", *argv], cwd=cwd, env=env, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    seen: list[str] = []
    tail: list[str] = []
    for line in child.stderr:
        tail = [*tail[-4:], line.rstrip()]
        if line.startswith("…"):
            seen.append(line[2:].rstrip())
            if len(seen) == k:
                child.send_signal(sig)
    return child.wait(timeout=600), seen, "\n".join(tail)


def run_in_closing_terminal(argv: list[str], k: int, *, cwd: Path, tmp: Path) -> tuple[int, list[str]]:
    """Run `deploykit ARGV` in a terminal of its own (a pseudo-terminal, as an SSH session gives it) and close the
    terminal when its k-th progress line arrives: the kernel sends SIGHUP, and every later write to the terminal
    fails (EIO). Returns (exit status, the progress lines seen)."""
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO), "DEPLOYKIT_CACHE_DIR": str(tmp.parent / "c")}
    pid, terminal = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "deploykit.cli", *argv], env)
    said = b""
    while said.count("\n…".encode()) + said.startswith("…".encode()) < k:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the child ended before its k-th line
            break
        if not chunk:
            break
        said += chunk
    os.close(terminal)
    _, status = os.waitpid(pid, 0)
    lines = said.decode(errors="replace").splitlines()
    return os.waitstatus_to_exitcode(status), [line[2:] for line in lines if line.startswith("…")]


def distinct_events(events: list[str]) -> list[int]:
    """The event numbers whose text differs from the event before once figures are ignored: a count's ticks
    ("timing ... 37/100") come between the same two writes, so one of them stands for the rest."""
    shapes = [_shape(e) for e in events]
    return [k + 1 for k, shape in enumerate(shapes) if k == 0 or shape != shapes[k - 1]]


def _load_dependent(event: str) -> bool:
    """A warning: it says how busy the machine was ("the machine's peaks changed during the run"), so another
    run may not say it, and a signal due at one would never come; such events are no points."""
    return event.startswith("warning:")


def distinct_points(events: list[str]) -> list[Point]:
    """distinct_events as (shape, how many runs of that shape came before): the same point in another run of
    the flow, whose counts tick a different number of times (a benchmark's progress depends on its speed).
    Load-dependent events (warnings) are left out."""
    seen: dict[str, int] = {}
    points = []
    for k in distinct_events(events):
        if _load_dependent(events[k - 1]):
            continue
        shape = _shape(events[k - 1])
        points.append((shape, seen.get(shape, 0)))
        seen[shape] = seen.get(shape, 0) + 1
    return points


def exit_status_of(sig: int) -> int:
    return 128 + sig


def fresh(root: Path, name: str) -> tuple[Path, Path]:
    """An empty output folder and an empty $TMPDIR for one run."""
    out, tmp = root / name / "out", root / name / "tmp"
    shutil.rmtree(root / name, ignore_errors=True)
    out.mkdir(parents=True)
    tmp.mkdir()
    return out, tmp


SIGNALS = (signal.SIGINT, signal.SIGTERM)
HANGUPS = (signal.SIGHUP, signal.SIGQUIT)  # a closed terminal, Ctrl-\: by default each killed deploykit outright
