"""What a timed runner needs and what its timing becomes: inputs, shapes, the per-call step, BenchResult.

- Inputs: several different arrays are generated up front (at least 4, and enough to exceed 64 MB when
  they are small) and the iterations rotate among them, so no iteration reads an input still in cache.
- The timing itself (warm-up, interleaved rounds, pauses, load) is deploykit.bench.interleave's.
- Throughput = queries / the time spent in the timed calls; images/s = that x batch.
- A runner with `infer_timed(feed)` (the TensorRT runner) also reports per-iteration H2D / compute / D2H
  times measured with CUDA events, and the host's enqueue time; compute alone is the GPU's compute-only
  time (trtexec's "GPU Compute Time"; with --cuda-graph a replayed graph), latency stays end-to-end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from deploykit.bench.interleave import Timing
from deploykit.bench.stats import LatencyStats, Ratio, median_ratio, summarize
from deploykit.environment import check_memory
from deploykit.errors import InputError, size_text
from deploykit.runner import Runner, TensorSpec

POOL_BYTES = 64 * 2**20


def pool_size(bytes_per_feed: int, minimum: int = 4, maximum: int = 16) -> int:
    """How many distinct inputs to rotate among: enough to overflow the caches, within [minimum, maximum]."""
    return max(minimum, min(maximum, math.ceil(POOL_BYTES / max(bytes_per_feed, 1))))


def feed_bytes(specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shapes[s.name]) * np.dtype(s.dtype).itemsize for s in specs)


def check_pool_fits(specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]],
                    activations: int | None = None) -> None:
    """Refuse, before any array is made, a pool of inputs, with the model's `activations` (bytes, when known)
    beside it, larger than the memory available: under overcommit the allocations would succeed and the kernel's
    OOM killer end the run without a word."""
    size = feed_bytes(specs, shapes)
    count, model = pool_size(size), activations or 0
    first = "x".join(map(str, shapes[specs[0].name]))
    check_memory(size * count, f"a pool of {count} inputs of {first}", "give a smaller batch or shape",
                 "the inputs alone")
    check_memory(size * count + model, f"a run at {first}", "give a smaller batch or shape",
                 f"{count} distinct inputs and the model's activations, {size_text(model)}")


def input_pool(specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]], *, count: int | None = None,
               seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Distinct random feeds (standard normal, in each input's dtype) for the given full shapes."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count or pool_size(feed_bytes(specs, shapes))):
        feed = {}
        for spec in specs:
            if np.issubdtype(np.dtype(spec.dtype), np.floating):
                feed[spec.name] = rng.standard_normal(shapes[spec.name], dtype=np.float32).astype(spec.dtype)
            else:
                feed[spec.name] = np.zeros(shapes[spec.name], dtype=spec.dtype)
        feeds.append(feed)
    return feeds


class FixedBatch(InputError):
    """A batch the model's input, fixed at another batch, cannot take."""


def resolve_shapes(specs: Sequence[TensorSpec], batch: int, input_shape: tuple[int, ...] | None,
                   default_hw: tuple[int, int] | None) -> dict[str, tuple[int, ...]]:
    """Full input shapes at `batch`: --input-shape for the first input, else the model's fixed dims and
    its own input size. Fails with the fix when a dimension stays unknown."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, spec in enumerate(specs):
        spec.numpy_dtype()  # before any shape: a string input has nothing to time
        if index == 0 and input_shape is not None:
            if len(input_shape) != len(spec.shape):
                raise InputError(f"--input-shape has {len(input_shape)} dimensions; {spec.describe()} needs "
                                 f"{len(spec.shape)}")
            dims = [batch, *input_shape[1:]]
        else:
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in spec.shape]
            dims[0] = batch
            if len(dims) == 4 and default_hw and dims[1] > 0:
                dims[2] = dims[2] if dims[2] > 0 else default_hw[0]
                dims[3] = dims[3] if dims[3] > 0 else default_hw[1]
            elif len(dims) == 4 and default_hw and dims[1] < 0:
                dims[1:] = [3, *default_hw]
        if any(d <= 0 for d in dims):
            raise InputError(f"the size of {spec.describe()} is not known; give --input-shape N,C,H,W")
        fixed = spec.shape[0]
        if isinstance(fixed, int) and fixed > 0 and fixed != batch:
            raise FixedBatch(f"{spec.describe()} has a fixed batch of {fixed}; --batch {batch} cannot run")
        shapes[spec.name] = tuple(dims)
    return shapes


@dataclass
class BenchResult:
    """One (target, backend, precision, batch) measurement. Times in ms."""

    target: str
    backend: str
    precision: str
    batch: int
    input_shape: tuple[int, ...]
    mode: str
    latency: LatencyStats
    throughput_qps: float
    images_per_s: float
    walltime_s: float
    warmup_iterations: int
    distinct_inputs: int
    threads: int | None
    phases: dict[str, LatencyStats] = field(default_factory=dict)
    madds: int | None = None
    achieved_gflops: float | None = None
    efficiency_percent: float | None = None  # of the measured fp32 GEMM peak
    madds_source: str = ""  # what counted the multiply-adds
    output_bytes: int | None = None  # per inference, all outputs (an --head argmax class map: 1 byte a pixel)
    samples_ms: list[float] = field(default_factory=list)
    run_id: str = ""  # results of one round-robin run share it: samples_ms[i] of each comes from round i
    set_aside_ms: list[float] = field(default_factory=list)  # disturbed rounds' samples, not in the figures
    concurrency: int | None = None  # a served endpoint's concurrent clients (bench --url); None: in process
    errors: int = 0  # requests the endpoint answered with an error (not timed)
    # how the server batched the requests, where it reports it: {"model", "batch_size", "executions"}
    server_batches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str, int, tuple[int, ...], int | None]:
        return (self.target, self.backend, self.precision, self.batch, tuple(self.input_shape), self.concurrency)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        """From to_dict's form; what a comparison or a speed-up reads is checked here (an InputError naming the
        field), so an edited file is refused when it is read, not after the timing it is compared with."""
        fields = dict(data)
        for name in ("target", "backend", "precision"):
            _check(name, fields[name], isinstance(fields[name], str), "text")
        _check("batch", fields["batch"], _whole(fields["batch"]) and fields["batch"] > 0, "a positive integer")
        shape = fields["input_shape"]
        _check("input_shape", shape, isinstance(shape, list) and all(_whole(v) for v in shape), "a list of integers")
        concurrency = fields.get("concurrency")
        _check("concurrency", concurrency, concurrency is None or _whole(concurrency), "null or an integer")
        for name in ("samples_ms", "set_aside_ms"):
            times = fields.get(name, [])
            _check(name, times, isinstance(times, list) and all(_time(v) and v > 0 for v in times),
                   "a list of milliseconds above 0")  # a median of 0 ms makes every change and ratio infinite
        fields["input_shape"] = tuple(shape)
        fields["latency"] = _stats(fields["latency"])
        fields["phases"] = {k: _stats(v) for k, v in (fields.get("phases") or {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in fields.items() if k in known})


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_MS = 1e9  # 11.6 days: no call takes longer, and edited figures near 1e308 overflow a median to inf


def _time(value: object) -> bool:
    """A duration in ms as JSON holds it: a number from 0 to MAX_MS."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_MS


def _check(name: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise InputError(f"its result field {name} is {str(value)[:60]!r}, not {expected} (an edited file); write "
                         "one with deploykit bench ... -o FILE")


def _stats(data: Mapping[str, Any]) -> LatencyStats:
    known = set(LatencyStats.__dataclass_fields__)
    for name, value in data.items():
        _check(f"latency {name}", value, name not in known or value is None or _time(value), "milliseconds")
    return LatencyStats(**{k: v for k, v in data.items() if k in known})


def speedup(slow: BenchResult, fast: BenchResult) -> Ratio:
    """How many times faster `fast` ran than `slow` (per image), with the bootstrap interval of that ratio of
    medians; paired by round when both were timed in the same round-robin run."""
    paired = bool(slow.run_id) and slow.run_id == fast.run_id and len(slow.samples_ms) == len(fast.samples_ms)
    slow_ms = slow.samples_ms or [slow.latency.median]
    fast_ms = fast.samples_ms or [fast.latency.median]
    ratio = median_ratio(slow_ms, fast_ms, paired=paired)
    return ratio.scaled(fast.batch / slow.batch)  # a batch-4 run's latency covers 4 images


def mode_of(runner: Runner) -> str:
    if hasattr(runner, "infer_timed"):
        graph = "CUDA graph replay" if getattr(runner, "cuda_graph", False) else "direct enqueue"
        return (f"end-to-end latency (host arrays in and out: H2D + compute + D2H, {graph}); phases.compute is "
                "the GPU compute-only time from CUDA events")
    return "end-to-end latency (host arrays in and out)"


def step_for(runner: Runner, feeds: Sequence[Mapping[str, np.ndarray]]) -> Callable[[int], object]:
    """One timed call per iteration; every feed is validated once here, before timing, not inside the loop."""
    for feed in feeds:
        runner.validate_feed(feed)
    timed = getattr(runner, "infer_timed", None)
    if callable(timed):
        return lambda i: timed(feeds[i % len(feeds)], validate=False)
    return lambda i: runner.infer_unchecked(feeds[i % len(feeds)])


def result_from_timing(timing: Timing, *, target: str, backend: str, precision: str, batch: int,
                       input_shape: tuple[int, ...], mode: str, threads: int | None, distinct_inputs: int,
                       madds: int | None, peak_gflops: float | None, run_id: str = "") -> BenchResult:
    samples = [round(ms, 4) for ms in timing.samples_ms]  # 0.1 us: what the JSON keeps, so a reload decides alike
    latency = summarize(samples)
    qps = len(timing.samples_ms) / timing.walltime_s if timing.walltime_s > 0 else 0.0
    achieved = 2 * madds / (latency.median * 1e-3) / 1e9 if madds else None
    efficiency = 100 * achieved / peak_gflops if achieved is not None and peak_gflops else None
    return BenchResult(
        target=target, backend=backend, precision=precision, batch=batch, input_shape=tuple(input_shape),
        mode=mode, latency=latency, throughput_qps=qps, images_per_s=qps * batch, walltime_s=timing.walltime_s,
        warmup_iterations=timing.warmup_iterations, distinct_inputs=distinct_inputs, threads=threads,
        phases={p: summarize(v) for p, v in timing.phases_ms.items()}, madds=madds, achieved_gflops=achieved,
        efficiency_percent=efficiency, samples_ms=samples, run_id=run_id,
        set_aside_ms=[round(ms, 4) for ms in timing.set_aside_ms])
