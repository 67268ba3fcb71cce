"""The timing harness: iteration counts, input rotation, GPU phase times, shapes, derived figures."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from deploykit.bench.harness import (
    Timing,
    TimingConfig,
    input_pool,
    phase_times,
    pool_size,
    resolve_shapes,
    result_from_timing,
    step_for,
    time_calls,
)
from deploykit.errors import InputError
from deploykit.runner import Runner, TensorSpec

EXACT = TimingConfig(warmup_s=0.0, duration_s=0.0, iterations=7, min_warmup_iterations=2)


def test_exact_iterations_after_warmup() -> None:
    calls: list[int] = []
    timing = time_calls(lambda i: calls.append(i), EXACT)
    assert calls == list(range(9))  # 2 warm-up + 7 timed, consecutive indices
    assert len(timing.samples_ms) == 7 and timing.warmup_iterations == 2
    assert all(s >= 0 for s in timing.samples_ms) and timing.walltime_s >= 0


def test_duration_mode_runs_at_least_the_minimum() -> None:
    timing = time_calls(lambda i: None, TimingConfig(warmup_s=0.0, duration_s=0.0, min_iterations=10))
    assert len(timing.samples_ms) == 10


class Recorder(Runner):
    backend = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def _open(self) -> None:
        pass

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec("input", ("batch", 3, "height", "width"), "float16")]

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec("output", ("batch", 1, "height", "width"), "float32")]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.seen.append(float(feed["input"].ravel()[0]))
        return {"output": np.zeros((1, 1, 2, 2), np.float32)}


def test_inputs_rotate_among_distinct_arrays() -> None:
    runner = Recorder()
    shapes = resolve_shapes(runner.input_specs(), 1, None, (8, 8))
    assert shapes == {"input": (1, 3, 8, 8)}
    feeds = input_pool(runner.input_specs(), shapes, count=4)
    assert all(f["input"].dtype == np.float16 for f in feeds)
    assert len({f["input"].tobytes() for f in feeds}) == 4
    with runner:
        time_calls(step_for(runner, feeds), TimingConfig(warmup_s=0, iterations=8, min_warmup_iterations=0))
    firsts = [float(f["input"].ravel()[0]) for f in feeds]
    assert runner.seen == firsts * 2


def test_pool_size_overflows_caches_within_limits() -> None:
    assert pool_size(3 * 64 * 64 * 4) == 16  # small inputs: the maximum
    assert pool_size(3 * 513 * 513 * 4) == 16
    assert pool_size(8 * 2**20) == 8  # 64 MB / 8 MB
    assert pool_size(50 * 2**20) == 4  # never fewer than 4


def test_phase_times_from_the_tensorrt_runner_format() -> None:
    outputs = {"output": np.zeros(3)}
    times = {"h2d_ms": 0.5, "compute_ms": 2.0, "d2h_ms": 0.25, "latency_ms": 2.75, "enqueue_ms": 0.1}
    assert phase_times((outputs, times)) == {"h2d": 0.5, "compute": 2.0, "d2h": 0.25, "enqueue": 0.1}
    assert phase_times(outputs) is None
    timing = time_calls(lambda i: (outputs, times), EXACT)
    assert timing.phases_ms["compute"] == [2.0] * 7


def test_shapes_from_options_and_their_errors() -> None:
    dynamic = [TensorSpec("input", ("batch", 3, "height", "width"), "float32")]
    assert resolve_shapes(dynamic, 4, (1, 3, 32, 48), None) == {"input": (4, 3, 32, 48)}
    with pytest.raises(InputError, match="--input-shape"):
        resolve_shapes(dynamic, 1, None, None)
    fixed = [TensorSpec("input", (1, 3, 16, 16), "float32")]
    assert resolve_shapes(fixed, 1, None, None) == {"input": (1, 3, 16, 16)}
    with pytest.raises(InputError, match="fixed batch of 1"):
        resolve_shapes(fixed, 2, None, None)
    with pytest.raises(InputError, match="dimensions"):
        resolve_shapes(dynamic, 1, (3, 32, 32), None)


def test_derived_figures() -> None:
    timing = Timing(samples_ms=[10.0, 20.0, 30.0, 40.0], walltime_s=0.2, warmup_iterations=2)
    result = result_from_timing(timing, target="m", backend="onnxruntime", precision="fp32", batch=2,
                                input_shape=(2, 3, 8, 8), mode="end-to-end", threads=2, distinct_inputs=16,
                                madds=10**9, peak_gflops=160.0)
    assert result.throughput_qps == pytest.approx(20.0)  # 4 queries / 0.2 s
    assert result.images_per_s == pytest.approx(40.0)
    assert result.latency.median == 25.0
    assert result.achieved_gflops == pytest.approx(80.0)  # 2 GFLOP / 25 ms
    assert result.efficiency_percent == pytest.approx(50.0)
    again = type(result).from_dict(result.to_dict())
    assert again.key == result.key and again.latency == result.latency


def test_timed_loops_report_a_typed_count() -> None:
    from deploykit.types import Progressed

    events: list[object] = []
    time_calls(lambda i: None, EXACT, progress=events.append, label="m")
    assert events == [Progressed("timing m (iterations)", k, 7) for k in range(1, 8)]
    events.clear()
    time_calls(lambda i: None, TimingConfig(warmup_s=0.0, duration_s=0.0, min_iterations=3),
               progress=events.append, label="m")
    assert events[-1] == Progressed("timing m (% of 0 s)", 100, 100)  # closed even when time ran out early
