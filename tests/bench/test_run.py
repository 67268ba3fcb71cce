"""bench_targets: every contender asked for is timed on its own, and each row names one contender."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from deploykit.bench.interleave import TimingConfig
from deploykit.bench.run import BenchReport, bench_targets, check_batches
from deploykit.bench.runners import BenchTarget
from deploykit.errors import InputError
from deploykit.runner import Runner, TensorSpec

FAST = TimingConfig(warmup_s=0.0, iterations=3, min_warmup_iterations=0, pause_s=0.0)


class Counting(Runner):
    backend = "onnxruntime"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def _open(self) -> None:
        pass

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec("input", ("batch", 3, 8, 8), "float32")]

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec("output", ("batch", 1, 8, 8), "float32")]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"output": np.zeros((1, 1, 8, 8), np.float32)}


def _target(runner: Runner, label: str = "model.onnx") -> BenchTarget:
    return BenchTarget(label=label, kind="onnx", backend="onnxruntime", precision="fp32", runner=runner,
                       default_hw=(8, 8), madds_at=lambda shape: None, madds_source="")


def test_targets_of_one_label_are_each_timed_and_told_apart() -> None:
    """a/model.onnx and b/model.onnx (or one file given twice) were one contender, timed once and shown twice."""
    first, second, other = Counting(), Counting(), Counting()
    targets = [_target(first), _target(other, "other.onnx"), _target(second)]
    report = bench_targets(targets, [], name="models", config=FAST, roofline=False)
    assert [r.target for r in report.results] == ["model.onnx", "other.onnx", "model.onnx #2"]
    assert first.calls >= 3 and second.calls >= 3 and other.calls >= 3  # each ran its own rounds
    assert len({r.run_id for r in report.results}) == 1


def test_a_batch_given_twice_is_refused() -> None:
    with pytest.raises(InputError, match=r"batch 2 is given twice.*give each batch once"):
        check_batches([1, 2, 2])
    check_batches([1, 2, 4])


def test_a_baseline_whose_results_are_not_a_list_is_refused() -> None:
    """{"results": {}} read as a run of nothing: every result 'not in the baseline', exit 0."""
    with pytest.raises(InputError, match="results are not a list"):
        BenchReport.from_dict({"results": {}, "environment": {}})
