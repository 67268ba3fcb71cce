"""The machine's load around a timing run: other processes' CPU time from /proc/stat minus our own, and the
warning the report gives when it was busy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from deploykit.bench import load as load_module
from deploykit.bench.load import LoadProbe, MachineLoad, RoundMeter


def _stat(busy: int, idle: int) -> str:
    # cpu user nice system idle iowait irq softirq steal
    return f"cpu  {busy - 30} 0 10 {idle} 5 0 10 10 0 0\ncpu0 1 2 3 4\n"


def test_other_processes_share_is_busy_time_minus_our_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stat = tmp_path / "stat"
    real_open = open

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        return real_open(stat if path == "/proc/stat" else path, *args, **kwargs)  # type: ignore[call-overload]
    monkeypatch.setattr(load_module, "open", fake_open, raising=False)
    hz = os.sysconf("SC_CLK_TCK")
    own = iter([10.0, 10.5])  # we used 0.5 s of CPU meanwhile
    monkeypatch.setattr(load_module, "_own_seconds", lambda: next(own))
    clock = iter([100.0, 102.0])  # over 2 s
    monkeypatch.setattr(load_module.time, "perf_counter", lambda: next(clock))
    stat.write_text(_stat(busy=1000, idle=5000))
    probe = LoadProbe()
    stat.write_text(_stat(busy=1000 + int(2.5 * hz), idle=5000))  # 2.5 s busy in all: 2 s were others'
    found = probe.stop()
    assert found.others_cores == pytest.approx(1.0) and found.seconds == 2.0
    assert found.busy and "other processes kept 1.00 of" in (found.warning() or "")


def test_rounds_are_measured_in_windows_and_disturbed_ones_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    # (wall s, every CPU's busy s, our own CPU s) at each reading
    readings = iter([(0.0, 100.0, 10.0), (0.05, 100.1, 10.1), (0.12, 100.24, 10.24),  # rounds 0-1: ours only
                     (0.32, 100.64, 10.44),  # round 2: others kept 0.2 s / 0.2 s = 1 core busy
                     (0.45, 100.9, 10.7)])  # round 3: quiet again
    monkeypatch.setattr(load_module, "_read", lambda: load_module._Reading(*next(readings)))
    meter = RoundMeter()
    for _ in range(3):
        meter.round_done()
    assert meter.shares == [pytest.approx(0.0)] * 2 + [pytest.approx(1.0)]  # the first two measured together
    assert meter.quiet_so_far() == 2
    meter.round_done()
    assert meter.finish() == pytest.approx([0.0, 0.0, 1.0, 0.0])


def test_quiet_and_unknown_machines() -> None:
    quiet = MachineLoad(cores=2, seconds=10, load_before=1.9, load_after=2.0, others_cores=0.05)
    assert not quiet.busy and quiet.warning() is None  # a high load average of our own making is not a warning
    unknown = MachineLoad(cores=2, seconds=10, load_before=None, load_after=1.5, others_cores=None)
    assert unknown.busy and "load average unknown before, 1.50 after" in (unknown.warning() or "")
    assert MachineLoad.from_dict({**quiet.to_dict(), "extra": 1}) == quiet


def test_a_real_probe_sees_a_busy_child_as_others() -> None:
    if not os.path.exists("/proc/stat"):
        pytest.skip("needs /proc/stat (Linux)")
    probe = LoadProbe()
    time.sleep(0.15)  # longer than one window of CPU ticks
    found = probe.stop()
    assert found.others_cores is not None and found.others_cores >= 0
