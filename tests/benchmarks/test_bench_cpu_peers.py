"""benchmarks/bench_cpu_peers.py: deploykit's timing core gives every contender its warm-up, then one run per round
in rotating order on the round's input; the issue 15 targets are judged from the rows (the full run needs the
models: see the script)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

from deploykit.bench import interleave
from deploykit.bench.load import RoundMeter
from tests.benchmarks import load_script


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("bench_cpu_peers")


class QuietMeter(RoundMeter):
    """No round disturbed, whatever else runs on this machine."""

    def finish(self) -> list[float]:
        return [0.0] * len(super().finish())

    def quiet_so_far(self) -> int:
        return len(self.shares) + self.pending


def test_round_robin_rotates_order_and_inputs(script: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interleave, "RoundMeter", QuietMeter)
    calls: list[tuple[str, float]] = []

    def contender(label: str) -> Any:
        return script.Contender(label, "fp32", "peer", lambda x: calls.append((label, float(x[0]))) or x)

    entries = [contender("a"), contender("b"), contender("c")]
    inputs = [np.array([0.0]), np.array([1.0])]
    load = script.time_round_robin(entries, inputs, rounds=3, warmup=1)
    assert [len(e.times_ms) for e in entries] == [3, 3, 3]  # the warm-up calls are not timed
    assert [c[0] for c in calls] == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert [c[1] for c in calls[3:9]] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # one input per round, for all
    assert load.cores >= 1


def _row(label: str, precision: str, by: str, ms: float, agreement: float | None = None) -> dict[str, Any]:
    return {"contender": label, "precision": precision, "by": by, "median_ms": ms, "agreement": agreement}


def test_targets(script: ModuleType) -> None:
    rows = [_row("ORT default session", "fp32", "peer", 90.0), _row("OpenVINO fp32", "fp32", "peer", 72.0),
            _row("deploykit ORT fp32", "fp32", "deploykit", 86.0),
            _row("deploykit OpenVINO fp32", "fp32", "deploykit", 71.0),
            _row("deploykit ORT int8", "int8", "deploykit", 69.0, 0.969),
            _row("deploykit OpenVINO int8 (Q/DQ inputs)", "int8", "deploykit", 47.0, 0.972),
            _row("ORT quantize_static int8", "int8", "peer", 56.0, 0.971),
            _row("OpenVINO + NNCF int8", "int8", "peer", 44.0, 0.971)]
    verdicts = {c["target"]: c for c in script.targets(rows)}
    nncf = next(c for t, c in verdicts.items() if "NNCF" in t)
    assert nncf["ours"] == "deploykit OpenVINO int8 (Q/DQ inputs)" and nncf["verdict"] == "met"  # 1.07x
    assert next(c for t, c in verdicts.items() if "quantize_static" in t)["verdict"] == "MISSED"  # 69 > 56
    assert all(c["verdict"] == "met" for t, c in verdicts.items() if "FP32" in t)  # 71 <= 72 and <= 90
    worse = [dict(r, agreement=0.96) if r["contender"].startswith("deploykit OpenVINO int8") else r for r in rows]
    assert next(c for c in script.targets(worse) if "NNCF" in c["target"])["verdict"] == "MISSED"
    missing = script.targets([r for r in rows if "NNCF" not in r["contender"]])
    assert next(c for c in missing if "NNCF" in c["target"])["verdict"].startswith("not judged")
