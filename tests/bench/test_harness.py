"""What the harness gives a timed runner: input rotation, shapes, derived figures, speed-ups between results."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from deploykit.bench.harness import (
    BenchResult,
    input_pool,
    pool_size,
    resolve_shapes,
    result_from_timing,
    speedup,
    step_for,
)
from deploykit.bench.interleave import Timing, TimingConfig, time_interleaved
from deploykit.bench.stats import summarize
from deploykit.errors import InputError
from deploykit.runner import Runner, TensorSpec


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
        time_interleaved({"r": step_for(runner, feeds)}, TimingConfig(warmup_s=0, iterations=8,
                                                                     min_warmup_iterations=0))
    firsts = [float(f["input"].ravel()[0]) for f in feeds]
    assert runner.seen == firsts * 2


def test_pool_size_overflows_caches_within_limits() -> None:
    assert pool_size(3 * 64 * 64 * 4) == 16  # small inputs: the maximum
    assert pool_size(3 * 513 * 513 * 4) == 16
    assert pool_size(8 * 2**20) == 8  # 64 MB / 8 MB
    assert pool_size(50 * 2**20) == 4  # never fewer than 4


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
    assert result.throughput_qps == pytest.approx(20.0)  # 4 queries / 0.2 s in the timed calls
    assert result.images_per_s == pytest.approx(40.0)
    assert result.latency.median == 25.0
    assert result.achieved_gflops == pytest.approx(80.0)  # 2 GFLOP / 25 ms
    assert result.efficiency_percent == pytest.approx(50.0)
    again = type(result).from_dict(result.to_dict())
    assert again.key == result.key and again.latency == result.latency


def _result(samples: list[float], batch: int = 1, run_id: str = "") -> BenchResult:
    timing = Timing(samples_ms=samples, walltime_s=sum(samples) / 1e3, warmup_iterations=0)
    return result_from_timing(timing, target="m", backend="onnxruntime", precision="fp32", batch=batch,
                              input_shape=(batch, 3, 8, 8), mode="", threads=1, distinct_inputs=4, madds=None,
                              peak_gflops=None, run_id=run_id)


def test_speedups_pair_results_of_one_run_and_count_per_image() -> None:
    rng = np.random.default_rng(1)
    load = rng.choice([1.0, 3.0], 40)  # bursts that slow both contenders of a round alike
    slow, fast = _result(list(20 * load), run_id="a"), _result(list(10 * load), run_id="a")
    paired = speedup(slow, fast)
    assert paired.paired and paired.value == pytest.approx(2.0) and paired.low == pytest.approx(2.0)
    apart = speedup(_result(list(20 * load), run_id="a"), _result(list(10 * load), run_id="b"))
    assert not apart.paired and apart.value == pytest.approx(paired.value) and apart.high - apart.low > 0.5
    batched = speedup(slow, _result(list(10 * load), batch=4, run_id="a"))  # 10 ms for 4 images
    assert batched.value == pytest.approx(8.0)
    assert speedup(_result([10.0]), _result([10.0])).tied


def test_results_round_trip_with_their_spread_and_run() -> None:
    result = _result([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], run_id="r1")
    assert result.latency == summarize(result.samples_ms) and result.latency.p10 == 1.0
    again = BenchResult.from_dict(result.to_dict())
    assert again.run_id == "r1" and again.latency == result.latency
    old = result.to_dict()
    del old["latency"]["p10"], old["run_id"]  # a bench.json written before the spread was recorded
    assert BenchResult.from_dict(old).latency.p10 is None


def test_a_run_whose_activations_do_not_fit_is_refused_before_any_input_is_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The inputs alone fit, the inputs and the model's activations do not: refused, naming both, instead of a
    run the kernel's OOM killer ends without a word."""
    from deploykit.bench import harness

    specs = [TensorSpec("input", ("batch", 3, "height", "width"), "float32")]
    shapes = {"input": (8, 3, 64, 64)}
    pool = harness.feed_bytes(specs, shapes) * pool_size(harness.feed_bytes(specs, shapes))
    monkeypatch.setattr("deploykit.environment.available_memory", lambda: pool + 1000)
    harness.check_pool_fits(specs, shapes, activations=1000)
    with pytest.raises(InputError, match="the model's activations"):
        harness.check_pool_fits(specs, shapes, activations=1001)


@pytest.mark.parametrize(("field", "value"), [
    ("samples_ms", [1.0, "m.onnx"]), ("samples_ms", [1.0, [2.0]]), ("samples_ms", [{}]), ("samples_ms", [-1.0]),
    ("samples_ms", "1,2"), ("batch", "1"), ("batch", True), ("input_shape", [1, "3"]), ("input_shape", 4),
    ("target", ["m"]), ("concurrency", 1.5), ("set_aside_ms", [None]),
    ("samples_ms", [0.0, 0.0]), ("samples_ms", [1e308, 1e308])])  # an infinite change: '+inf%', '+nan%'
def test_an_edited_result_is_refused_when_read_naming_the_field(field: str, value: object) -> None:
    """A baseline JSON whose samples or key fields were edited was read as it was and failed in the comparison,
    after the whole timing (float('m.onnx'), an unhashable shape: exit 3)."""
    data = _result([1.0, 2.0, 3.0]).to_dict()
    data[field] = value
    with pytest.raises(InputError, match=f"result field {field} is .* -o FILE"):
        BenchResult.from_dict(data)
    data = _result([1.0, 2.0, 3.0]).to_dict()
    data["latency"]["median"] = "fast"
    with pytest.raises(InputError, match="result field latency median"):
        BenchResult.from_dict(data)
