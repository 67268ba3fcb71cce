"""Timing a runner the way an application would see it, and the results people can trust.

- Inputs: several different arrays are generated up front (at least 4, and enough to exceed 64 MB when
  they are small) and the iterations rotate among them, so no iteration reads an input still in cache.
- Warm-up: `warmup_s` seconds and at least 2 iterations (first runs allocate and pick kernels); excluded.
- Timed loop: exactly `iterations`, or until `duration_s` has passed and at least 10 iterations ran
  (trtexec's defaults: warm-up 0.2 s, duration 3 s, 10 iterations). Each iteration is timed host to
  host with perf_counter: end-to-end latency, arrays in and arrays out.
- Throughput = queries / total walltime of the timed loop (as trtexec); images/s = that x batch.
- A runner with `infer_timed(feed)` (the TensorRT runner) also reports per-iteration H2D / compute / D2H
  times measured with CUDA events, and the host's enqueue time; compute alone is the GPU's compute-only
  time (trtexec's "GPU Compute Time"; with --cuda-graph a replayed graph), latency stays end-to-end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from deploykit.bench.stats import LatencyStats, summarize
from deploykit.errors import InputError
from deploykit.runner import Runner, TensorSpec
from deploykit.types import Progress, Progressed

PHASES = ("h2d", "compute", "d2h", "enqueue")
POOL_BYTES = 64 * 2**20


@dataclass(frozen=True)
class TimingConfig:
    warmup_s: float = 0.2
    duration_s: float = 3.0
    iterations: int | None = None  # when set, exactly this many timed iterations (duration ignored)
    min_iterations: int = 10
    min_warmup_iterations: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Timing:
    samples_ms: list[float]
    walltime_s: float
    warmup_iterations: int
    phases_ms: dict[str, list[float]] = field(default_factory=dict)


def phase_times(result: object) -> dict[str, float] | None:
    """H2D / compute / D2H milliseconds from what a runner's `infer_timed` returned (a mapping, an object
    with `h2d_ms`-style attributes, or an (outputs, times) tuple); None when there are none."""
    if isinstance(result, tuple) and result:
        result = result[-1]
    found: dict[str, float] = {}
    for phase in PHASES:
        for key in (phase, f"{phase}_ms"):
            value = result.get(key) if isinstance(result, Mapping) else getattr(result, key, None)
            if isinstance(value, (int, float)):
                found[phase] = float(value)
                break
    return found or None


def time_calls(step: Callable[[int], object], config: TimingConfig, *, progress: Progress | None = None,
               label: str = "", report_every_s: float = 10.0) -> Timing:
    """Warm up, then time `step(i)` per iteration i; `step` may return phase times (see phase_times)."""
    started = time.perf_counter()
    warm = 0
    while warm < config.min_warmup_iterations or time.perf_counter() - started < config.warmup_s:
        step(warm)
        warm += 1
    samples: list[float] = []
    phases: dict[str, list[float]] = {}
    loop_start = last_report = time.perf_counter()
    counted, shown = _counted(config, label), 0
    while True:
        if config.iterations is not None:
            if len(samples) >= config.iterations:
                break
        elif len(samples) >= config.min_iterations and time.perf_counter() - loop_start >= config.duration_s:
            break
        t0 = time.perf_counter()
        result = step(warm + len(samples))
        t1 = time.perf_counter()
        samples.append((t1 - t0) * 1e3)
        for phase, ms in (phase_times(result) or {}).items():
            phases.setdefault(phase, []).append(ms)
        if progress and counted is not None:
            share = (t1 - loop_start) / config.duration_s if config.duration_s > 0 else 0.0
            done = len(samples) if config.iterations else min(99, int(100 * share))
            if done > shown:
                progress(Progressed(counted, done, config.iterations or 100))
                shown = done
        if progress and t1 - last_report >= report_every_s:
            progress(f"{label}: {len(samples)} iterations, median so far {np.median(samples):.2f} ms")
            last_report = t1
    if progress and counted is not None and shown < (config.iterations or 100):
        progress(Progressed(counted, config.iterations or 100, config.iterations or 100))
    return Timing(samples, time.perf_counter() - loop_start, warm, phases)


def _counted(config: TimingConfig, label: str) -> str | None:
    """What the timed loop's progress counts: iterations when their number is set, else percent of the
    duration (the loop also runs min_iterations, so it may finish past 100% of the time)."""
    if not label:
        return None
    return f"timing {label} (iterations)" if config.iterations else f"timing {label} (% of {config.duration_s:g} s)"


def pool_size(bytes_per_feed: int, minimum: int = 4, maximum: int = 16) -> int:
    """How many distinct inputs to rotate among: enough to overflow the caches, within [minimum, maximum]."""
    return max(minimum, min(maximum, math.ceil(POOL_BYTES / max(bytes_per_feed, 1))))


def input_pool(specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]], *, count: int | None = None,
               seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Distinct random feeds (standard normal, in each input's dtype) for the given full shapes."""
    rng = np.random.default_rng(seed)
    size = sum(math.prod(shapes[s.name]) * np.dtype(s.dtype).itemsize for s in specs)
    feeds = []
    for _ in range(count or pool_size(size)):
        feed = {}
        for spec in specs:
            if np.issubdtype(np.dtype(spec.dtype), np.floating):
                feed[spec.name] = rng.standard_normal(shapes[spec.name], dtype=np.float32).astype(spec.dtype)
            else:
                feed[spec.name] = np.zeros(shapes[spec.name], dtype=spec.dtype)
        feeds.append(feed)
    return feeds


def resolve_shapes(specs: Sequence[TensorSpec], batch: int, input_shape: tuple[int, ...] | None,
                   default_hw: tuple[int, int] | None) -> dict[str, tuple[int, ...]]:
    """Full input shapes at `batch`: --input-shape for the first input, else the model's fixed dims and
    its own input size. Fails with the fix when a dimension stays unknown."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, spec in enumerate(specs):
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
            raise InputError(f"{spec.describe()} has a fixed batch of {fixed}; --batch {batch} cannot run")
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
        data["samples_ms"] = [round(s, 4) for s in self.samples_ms]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        fields = dict(data)
        fields["input_shape"] = tuple(fields["input_shape"])
        fields["latency"] = LatencyStats(**fields["latency"])
        fields["phases"] = {k: LatencyStats(**v) for k, v in (fields.get("phases") or {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in fields.items() if k in known})


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


def measure(runner: Runner, feeds: Sequence[Mapping[str, np.ndarray]], config: TimingConfig, *,
            progress: Progress | None = None, label: str = "") -> Timing:
    """Time an entered runner over rotating feeds."""
    return time_calls(step_for(runner, feeds), config, progress=progress, label=label)


def result_from_timing(timing: Timing, *, target: str, backend: str, precision: str, batch: int,
                       input_shape: tuple[int, ...], mode: str, threads: int | None, distinct_inputs: int,
                       madds: int | None, peak_gflops: float | None) -> BenchResult:
    latency = summarize(timing.samples_ms)
    qps = len(timing.samples_ms) / timing.walltime_s if timing.walltime_s > 0 else 0.0
    achieved = 2 * madds / (latency.median * 1e-3) / 1e9 if madds else None
    efficiency = 100 * achieved / peak_gflops if achieved is not None and peak_gflops else None
    return BenchResult(
        target=target, backend=backend, precision=precision, batch=batch, input_shape=tuple(input_shape),
        mode=mode, latency=latency, throughput_qps=qps, images_per_s=qps * batch, walltime_s=timing.walltime_s,
        warmup_iterations=timing.warmup_iterations, distinct_inputs=distinct_inputs, threads=threads,
        phases={p: summarize(v) for p, v in timing.phases_ms.items()}, madds=madds, achieved_gflops=achieved,
        efficiency_percent=efficiency, samples_ms=timing.samples_ms)
