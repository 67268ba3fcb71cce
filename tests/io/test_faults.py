"""Faults at any point leave nothing half-written (issue 18, item 3): SIGINT and SIGTERM at each progress event of
export, build-engine (fp16, int8) and deploy (SIGHUP, SIGQUIT and a terminal that closes at a sample of them),
and a full disk at each write (tests/io/faults.py says what must
hold afterwards).

Three drivers, from fast to real:
- in process: the k-th progress event sends the signal to this process (a real signal, delivered where the
  library reported progress), for every k and both signals; the patched writer raises ENOSPC at every k-th
  write. Deterministic, and no interpreter start per run.
- a tmpfs (root only; skipped elsewhere) of growing size holds the output folder and $TMPDIR: the disk really
  fills, in whatever writes it (ONNX Runtime's and the exporters' C++ writers too).
- a child process (`python -m deploykit.cli`) gets the signal asynchronously when its k-th progress line arrives.
Deploy's sweep, and the child-process sweep over every k, are `slow`; the default suite runs the in-process
sweeps of export and build-engine and a sample of the others. Measured on a loaded 2-core AMD EPYC: the default
part about 2 minutes, the slow part about 15 (re-measure on a quiet machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.io.faults import (
    FLOWS,
    HANGUPS,
    SIGNALS,
    Flow,
    Trigger,
    check_after_fault,
    distinct_events,
    distinct_points,
    exit_status_of,
    fresh,
    full_disk_at_write,
    invoke,
    leftovers,
    make_inputs,
    one_error_line,
    run_in_closing_terminal,
    run_with_signal,
    signal_at_event,
    signal_at_write,
    snapshot,
)

FAST = ("export", "build-fp16", "build-int8")
LATE_WRITES = ("parity-report", "bench-out", "package")  # flows whose one output is written after the work


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("fault-inputs"))


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This test's own $TMPDIR root, calibration cache and working folder."""
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _point_tmpdir(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$TMPDIR and the calibration cache of one run (an empty cache: every run calibrates and writes alike)."""
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp.parent / "cache"))


def _clean_run(flow: Flow, inputs: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A run without faults: it must work, and its events are the points to interrupt."""
    out, tmp = fresh(root, "clean")
    _point_tmpdir(tmp, monkeypatch)
    with signal_at_event(None, signal.SIGINT, monkeypatch) as events:
        result = invoke(flow.argv(inputs, out))
    assert result.exit_code == 0, result.output
    return list(events)


def _interrupt_at(flow: Flow, inputs: Path, root: Path, k: Trigger, sig: int, monkeypatch: pytest.MonkeyPatch,
                  *, rerun: bool) -> None:
    before = snapshot(inputs)
    out, tmp = fresh(root, f"{sig}-{abs(hash(k))}")
    _point_tmpdir(tmp, monkeypatch)
    with monkeypatch.context() as patch, signal_at_event(k, sig, patch):
        result = invoke(flow.argv(inputs, out))
    assert result.exit_code == exit_status_of(sig), (k, sig, result.output)
    assert one_error_line(result.stderr)[-1].startswith("deploykit: ")
    check_after_fault(flow, inputs, out, tmp, before)
    landed = bool(flow.finals) and (out / flow.finals[0]).exists()  # the signal came after they landed, complete
    if rerun and not landed:
        again = invoke(flow.argv(inputs, out))
        assert again.exit_code == 0, (k, sig, again.output)
        check_after_fault(flow, inputs, out, tmp, before)


@pytest.mark.parametrize("name", FAST)
def test_signals_at_every_progress_event_leave_nothing_half_written(name: str, inputs: Path, isolated: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    flow = FLOWS[name]
    events = _clean_run(flow, inputs, isolated, monkeypatch)
    assert len(events) >= 3, events
    for k in range(1, len(events) + 1):
        for sig in SIGNALS:
            # Nothing lands before the end, so a rerun is the clean run again: checked once per signal.
            _interrupt_at(flow, inputs, isolated, k, sig, monkeypatch, rerun=k == len(events) // 2)


def test_signals_and_full_disks_during_deploy_leave_a_resumable_folder(inputs: Path, isolated: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain in one folder (each sweep over every event or file is slow): SIGTERM as the int8 build starts, a
    full disk writing parity's record, SIGINT as the benchmark starts, a full disk writing the report; each
    leaves the folder consistent and the next plain run resumes it, and the last completes."""
    flow = FLOWS["deploy"]
    out, tmp = fresh(isolated, "chain")
    _point_tmpdir(tmp, monkeypatch)
    before = snapshot(inputs)
    faults: list[tuple[str, int, Callable[[pytest.MonkeyPatch], Any]]] = [
        ("[build-int8] starting", 143, lambda p: signal_at_event("[build-int8] starting", signal.SIGTERM, p)),
        ("/.parity.json.", 2, lambda p: full_disk_at_write("/.parity.json.", p, isolated)),
        ("[bench] starting", 130, lambda p: signal_at_event("[bench] starting", signal.SIGINT, p)),
        ("/.report.html.", 2, lambda p: full_disk_at_write("/.report.html.", p, isolated)),
    ]
    for when, expected, inject in faults:
        with monkeypatch.context() as patch, inject(patch) as seen:
            result = invoke(flow.argv(inputs, out))
        assert any(when in s for s in seen), (when, seen)
        assert result.exit_code == expected, (when, result.output)
        assert len(one_error_line(result.stderr)) == 1, result.stderr
        check_after_fault(flow, inputs, out, tmp, before)
    final = invoke([*flow.argv(inputs, out), "--json"])
    assert final.exit_code == 0, final.output
    check_after_fault(flow, inputs, out, tmp, before)


@pytest.mark.slow
def test_signals_at_every_deploy_event_leave_a_resumable_folder(inputs: Path, isolated: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    flow = FLOWS["deploy"]
    for point in distinct_points(_clean_run(flow, inputs, isolated, monkeypatch)):
        for sig in SIGNALS:
            _interrupt_at(flow, inputs, isolated, point, sig, monkeypatch, rerun=True)


def _full_disk_at(flow: Flow, inputs: Path, root: Path, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(inputs)
    out, tmp = fresh(root, f"enospc-{k}")
    _point_tmpdir(tmp, monkeypatch)
    with monkeypatch.context() as patch, full_disk_at_write(k, patch, root):
        result = invoke(flow.argv(inputs, out))
    assert result.exit_code == 2, (k, result.output)
    lines = one_error_line(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("deploykit: error: disk full: cannot write "), (k, lines)
    assert " free; it needs " in lines[0] and "Traceback" not in result.output, lines[0]
    check_after_fault(flow, inputs, out, tmp, before)
    again = invoke(flow.argv(inputs, out))  # once space is free again, a plain rerun works
    assert again.exit_code == 0, (k, again.output)


def _writes(flow: Flow, inputs: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    out, tmp = fresh(root, "count")
    _point_tmpdir(tmp, monkeypatch)
    with monkeypatch.context() as patch, full_disk_at_write(None, patch, root) as writes:
        assert invoke(flow.argv(inputs, out)).exit_code == 0
    assert writes, "the flow wrote nothing through Python's open"
    return writes


def _first_writes(writes: list[str]) -> list[int]:
    """The first write into each file (the later ones of the same file fail alike), but the calibration
    cache's: a cache that cannot be written only costs time next run (deploykit.calib.cache.store), so the
    flow goes on without it."""
    return [i + 1 for i, w in enumerate(writes)
            if (i == 0 or writes[i - 1] != w) and "/cache/calibration/" not in w]


@pytest.mark.parametrize("name", FAST)
def test_a_full_disk_at_each_write_is_exit_2_naming_the_path(name: str, inputs: Path, isolated: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    flow = FLOWS[name]
    for k in range(1, len(_writes(flow, inputs, isolated, monkeypatch)) + 1):
        _full_disk_at(flow, inputs, isolated, k, monkeypatch)


@pytest.mark.parametrize("name", LATE_WRITES)
def test_signals_and_full_disks_while_reporting_leave_nothing_half_written(name: str, inputs: Path, isolated: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    flow = FLOWS[name]
    events = _clean_run(flow, inputs, isolated, monkeypatch)
    for k in distinct_events(events):
        for sig in SIGNALS:
            _interrupt_at(flow, inputs, isolated, k, sig, monkeypatch, rerun=k == distinct_events(events)[-1])
    writes = _first_writes(_writes(flow, inputs, isolated, monkeypatch))
    for k in writes:
        _full_disk_at(flow, inputs, isolated, k, monkeypatch)
        for sig in SIGNALS:  # package reports no progress: a signal while it writes each file
            _signal_at_write(flow, inputs, isolated, k, sig, monkeypatch)


def _signal_at_write(flow: Flow, inputs: Path, root: Path, k: int, sig: int, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(inputs)
    out, tmp = fresh(root, f"signal-write-{k}-{sig}")
    _point_tmpdir(tmp, monkeypatch)
    with monkeypatch.context() as patch, signal_at_write(k, sig, patch, root):
        result = invoke(flow.argv(inputs, out))
    assert result.exit_code == exit_status_of(sig), (k, sig, result.output)
    check_after_fault(flow, inputs, out, tmp, before)
    assert invoke(flow.argv(inputs, out)).exit_code == 0  # nothing landed: the plain rerun works


@pytest.mark.slow
def test_a_full_disk_at_each_file_deploy_writes(inputs: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = FLOWS["deploy"]
    for k in _first_writes(_writes(flow, inputs, isolated, monkeypatch)):
        _full_disk_at(flow, inputs, isolated, k, monkeypatch)


# -- a real full disk: a small tmpfs ---------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A mount point for tmpfs file systems of chosen sizes (mounted by the test); unmounted afterwards."""
    point = tmp_path / "tmpfs"
    point.mkdir()
    probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {probe.stderr.decode().strip()}")
    subprocess.run(["umount", str(point)], check=True)
    mounted: list[str] = []
    yield point, mounted
    if os.path.ismount(point):
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.parametrize("name", FAST)
def test_a_really_full_disk_leaves_nothing_and_says_so(name: str, inputs: Path, isolated: Path,
                                                       tmpfs: tuple[Path, list[str]],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The output folder and $TMPDIR on a tmpfs too small for the flow, at sizes from 4 KiB to just below
    what it needs: the flow fails with exit 2 naming what it could not write, and leaves nothing."""
    flow = FLOWS[name]
    point, _ = tmpfs
    needed = _size_needed(flow, inputs, point, monkeypatch)
    sizes = sorted({4096 * max(1, round(needed * f / 4096)) for f in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)}
                   | {max(4096, needed - 4096)})
    for size in sizes:
        before = snapshot(inputs)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True)
        try:
            out, tmp = point / "out", point / "tmp"
            out.mkdir()
            tmp.mkdir()
            _point_tmpdir(tmp, monkeypatch)
            result = invoke(flow.argv(inputs, out))
            if result.exit_code != 0:  # at the largest sizes the flow may fit after all
                assert result.exit_code == 2, (size, result.output)
                lines = one_error_line(result.stderr)
                assert len(lines) == 1 and "disk full" in lines[0], (size, lines)
                assert " 0.0 MB" not in lines[0], lines[0]  # a few kB free or written are said as such
                check_after_fault(flow, inputs, out, tmp, before)
        finally:
            subprocess.run(["umount", str(point)], check=True)


def _size_needed(flow: Flow, inputs: Path, point: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """The tmpfs bytes a clean run of `flow` needs: its largest use, found by running it on a roomy tmpfs."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point)], check=True)
    try:
        (point / "out").mkdir()
        (point / "tmp").mkdir()
        _point_tmpdir(point / "tmp", monkeypatch)
        assert invoke(flow.argv(inputs, point / "out")).exit_code == 0
        st = os.statvfs(point)
        return (st.f_blocks - st.f_bfree) * st.f_frsize
    finally:
        subprocess.run(["umount", str(point)], check=True)


# -- a child process, signalled as a scheduler would -----------------------------------------------------------


def _child_sweep(flow: Flow, inputs: Path, root: Path, ks: list[int] | None,
                 signals: tuple[int, ...] = SIGNALS) -> None:
    """Signal a child at each event of `ks` (None: every event of a clean run), both signals; the plain rerun
    after one of them (or after each, for deploy, whose rerun resumes what landed) must work."""
    if ks is None:
        out, tmp = fresh(root, "child-clean")
        code, events, tail = run_with_signal(flow.argv(inputs, out), None, signal.SIGINT, cwd=root, tmp=tmp)
        assert code == 0, tail
        ks = distinct_events(events)
    for k in ks:
        for sig in signals:
            before = snapshot(inputs)
            out, tmp = fresh(root, f"child-{sig}-{k}")
            code, _, tail = run_with_signal(flow.argv(inputs, out), k, sig, cwd=root, tmp=tmp)
            check_after_fault(flow, inputs, out, tmp, before)
            landed = bool(flow.finals) and (out / flow.finals[0]).exists()  # signalled after they landed
            # A signal that arrives after the last event may find the work done: exit 0, or, once the command
            # has returned, death by the signal itself (the shell's $? is 128 + signal number all the same).
            assert code in (exit_status_of(sig), 0) or (code == -sig and (landed or flow.resumable)), (k, sig, tail)
            if code == exit_status_of(sig):
                assert tail.splitlines()[-1].startswith("deploykit: "), tail
            if code != 0 and not landed and (flow.resumable or sig == signal.SIGTERM):  # a rerun resumes or redoes
                again, _, tail = run_with_signal(flow.argv(inputs, out), None, sig, cwd=root, tmp=tmp)
                assert again == 0, tail


def test_a_child_process_signalled_mid_build_leaves_nothing(inputs: Path, isolated: Path) -> None:
    """A real process, signalled while it works: SIGTERM during build-engine --int8 once left model.int8.onnx
    behind, and the rerun refused ("exists already")."""
    _child_sweep(FLOWS["build-int8"], inputs, isolated, [4], (signal.SIGTERM,))


@pytest.mark.slow
@pytest.mark.parametrize("name", [*FAST, "deploy"])
def test_a_child_process_signalled_at_every_event_leaves_nothing(name: str, inputs: Path, isolated: Path) -> None:
    _child_sweep(FLOWS[name], inputs, isolated, None)


# -- SIGHUP and SIGQUIT: a terminal or SSH session that closes, Ctrl-\ --------------------------------------------


@pytest.mark.parametrize("name", [*FAST, *LATE_WRITES, "deploy"])
def test_sighup_and_sigquit_end_every_command_through_sigterms_cleanup(name: str, inputs: Path, isolated: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """deploykit handled only SIGINT and SIGTERM: SIGHUP (its terminal or SSH session closed) ended it where it
    stood with exit 129 and no word, SIGQUIT with a core dump, each leaving temporary files. Now each is ended
    as SIGTERM is (129, 131, one line), at the second progress event (package, which reports none: its first
    write; deploy: as its int8 build starts, and the plain rerun resumes)."""
    flow = FLOWS[name]
    for sig in HANGUPS:
        if name == "package":
            _signal_at_write(flow, inputs, isolated, 1, sig, monkeypatch)
        else:
            when: Trigger = "[build-int8] starting" if name == "deploy" else 2
            _interrupt_at(flow, inputs, isolated, when, sig, monkeypatch, rerun=True)


def test_a_child_process_hung_up_or_quit_mid_build_leaves_nothing(inputs: Path, isolated: Path) -> None:
    """The same as real signals to a real process, whose default action for both was to die on the spot."""
    _child_sweep(FLOWS["build-int8"], inputs, isolated, [4], HANGUPS)


def test_under_nohup_sighup_stays_ignored_and_the_command_finishes(inputs: Path, isolated: Path) -> None:
    """A signal deploykit starts with ignored stays ignored: `nohup deploykit ...` is how a user keeps the work
    running after the terminal closes (a handler for SIGHUP put in place regardless would end it)."""
    flow = FLOWS["export"]
    out, tmp = fresh(isolated, "nohup")
    code, seen, tail = run_with_signal(flow.argv(inputs, out), 2, signal.SIGHUP, cwd=isolated, tmp=tmp,
                                       prefix=("nohup",))
    assert len(seen) >= 2, seen
    assert code == 0, tail
    assert (out / "net.onnx").is_file()
    assert not leftovers(out, tmp), leftovers(out, tmp)


@pytest.mark.parametrize("name", ["export", "build-int8"])
def test_a_terminal_that_closes_mid_command_ends_it_with_129_and_nothing_left(name: str, inputs: Path,
                                                                             isolated: Path) -> None:
    """Closing the terminal sends SIGHUP and makes every later write to it fail (EIO): the one line written after
    the cleanup failed too, and deploykit ended with exit 1 and a traceback nobody saw in place of 129."""
    flow = FLOWS[name]
    before = snapshot(inputs)
    out, tmp = fresh(isolated, f"hangup-{name}")
    code, seen = run_in_closing_terminal(flow.argv(inputs, out), 2, cwd=isolated, tmp=tmp)
    assert len(seen) >= 2, seen
    assert code == exit_status_of(signal.SIGHUP), (code, seen)
    check_after_fault(flow, inputs, out, tmp, before)
    assert not any((out / name).exists() for name in flow.finals)
