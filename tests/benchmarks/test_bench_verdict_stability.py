"""benchmarks/bench_verdict_stability.py: the spread of each ratio across runs is judged per way of timing (the
verdict's own ratios only across runs that shipped the same artifact), the bursty neighbours really burn CPU and
stop, and the report lists every run (the full run needs the demo's deploy: see the script)."""

from __future__ import annotations

import sys
import types
from types import ModuleType
from typing import Any

import pytest

from tests.benchmarks import load_script


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("bench_verdict_stability")


def _ratio(value: float) -> dict[str, Any]:
    return {"value": value, "low": value * 0.97, "high": value * 1.03, "paired": True}


def _run(way: str, ship: str, over_fp32: float, int8_over_fp32: float) -> dict[str, Any]:
    return {"run": 1, "condition": "quiet", "way": way, "ship": ship, "verdict": "verdict: ...",
            "speedup_vs_torch": _ratio(2.5), "speedup_vs_fp32": _ratio(over_fp32),
            "int8_vs_fp32": _ratio(int8_over_fp32), "int8_vs_torch": _ratio(2.5), "medians_ms": {"torch fp32": 60.0},
            "load": {"cores": 2, "seconds": 14.0, "load_before": 0.3, "load_after": 1.1, "others_cores": 0.02}}


def test_spreads_are_judged_per_way_of_timing(script: ModuleType) -> None:
    runs = [_run("interleaved", "model.int8.ort.onnx", 1.80, 1.80), _run("interleaved", "model.int8.ort.onnx", 1.95,
                                                                         1.95),
            _run("sequential", "model.int8.ort.onnx", 1.40, 1.40), _run("sequential", "model.fp32.ort.onnx", 1.0, 1.94)]
    spread = script.spreads(runs)
    assert spread["interleaved"]["speedup_vs_fp32"] == {"min": 1.8, "max": 1.95, "max_over_min": 1.083,
                                                        "within": True}
    assert "speedup_vs_fp32" not in spread["sequential"]  # two different artifacts shipped: not one ratio
    assert spread["sequential"]["int8_vs_fp32"]["within"] is False  # 1.94 / 1.40
    env = {"cpu": "AMD EPYC", "cores": 2, "cpu_flags": ["avx2"], "threads": "all cores", "bench_seconds": 3.0,
           "neighbours": 2, "burst_s": "0.2,1.5", "artifacts": ["model.int8.ort.onnx (onnxruntime)"],
           "versions": {"torch": "2.13.0"}}
    text = script.markdown(runs, spread, env)
    assert text.count("| 1 | quiet |") == 4 and "1.80x (1.75-1.85)" in text
    assert "| interleaved | int8_vs_fp32 | 1.800 | 1.950 | 1.083 | met |" in text
    assert "| sequential | int8_vs_fp32 | 1.400 | 1.940 | 1.386 | MISSED |" in text
    assert "other processes kept 0.02 of 2 cores busy" in text


class _Stop(Exception):
    pass


class _FakeTime(types.ModuleType):
    """What the neighbour's `import time` gets: a clock that a busy loop advances, and a sleep that records."""

    def __init__(self) -> None:
        super().__init__("time")
        self.now, self.busy_polls, self.sleeps = 0.0, 0, []

    def perf_counter(self) -> float:
        self.busy_polls += 1
        self.now += 0.01
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) == 3:
            raise _Stop


def test_a_neighbour_is_busy_then_idle_in_turns(script: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeTime()
    monkeypatch.setitem(sys.modules, "time", fake)
    monkeypatch.setattr(sys, "argv", ["-c", "7", "0.2", "1.5"])
    with pytest.raises(_Stop):
        exec(compile(script.NEIGHBOUR, "neighbour", "exec"), {})
    assert len(fake.sleeps) == 3 and all(0.2 <= s <= 1.5 for s in fake.sleeps)  # idle turns
    assert fake.busy_polls >= 3 * 20  # busy turns of at least 0.2 s, spun in 0.01 s steps


def test_neighbours_run_during_the_block_and_are_reaped_after(script: ModuleType) -> None:
    with script.neighbours(2, 0.05, 0.1, seed=0) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.returncode is not None for p in procs)
