"""benchmarks/bench_verdict_stability.py: the spread of each ratio across runs is judged per way of timing (the
verdict's own ratios only across runs that shipped the same artifact), the bursty neighbours really burn CPU and
stop, and the report lists every run (the full run needs the demo's deploy: see the script)."""

from __future__ import annotations

import os
import time
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


def test_neighbours_burn_cpu_in_bursts_and_stop(script: ModuleType) -> None:
    before = os.times()
    started = time.perf_counter()
    with script.neighbours(1, 0.05, 0.1, seed=0):
        time.sleep(1.0)
    after = os.times()
    children = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    wall = time.perf_counter() - started
    assert 0.05 < children < wall  # busy for part of the time, not all of it, and reaped when the block ends
