"""`deploykit bench TARGET` as a library call: run every backend and batch, attach the environment
manifest and the machine's peaks, render tables/CSV, and compare against a saved baseline."""

from __future__ import annotations

import csv
import datetime
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from deploykit.backends.base import BENCH_CHOICES, availabilities
from deploykit.bench.harness import (
    BenchResult,
    TimingConfig,
    input_pool,
    measure,
    mode_of,
    resolve_shapes,
    result_from_timing,
)
from deploykit.bench.roofline import Peaks, best_of, measure_peaks, spread_warning
from deploykit.bench.runners import BenchTarget, Skipped
from deploykit.bench.stats import Change, compare_samples
from deploykit.environment import cpu_flags, probe
from deploykit.errors import BackendUnavailable, InputError
from deploykit.runner import Runner
from deploykit.types import Progress

HEADERS = ["target", "backend", "precision", "batch", "input", "min ms", "median ms", "mean ms", "p90 ms",
           "p95 ms", "p99 ms", "max ms", "std ms", "images/s", "GFLOP/s", "% GEMM peak"]


@dataclass
class BenchReport:
    results: list[BenchResult]
    skipped: list[Skipped]
    environment: dict[str, Any]
    peaks: dict[str, Any] | None
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "skipped": [asdict(s) for s in self.skipped],
                "environment": self.environment, "peaks": self.peaks, "config": self.config,
                "notes": self.notes, "created": self.created}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchReport:
        try:
            return cls(results=[BenchResult.from_dict(r) for r in data["results"]],
                       skipped=[Skipped(**s) for s in data.get("skipped", [])],
                       environment=dict(data.get("environment") or {}), peaks=data.get("peaks"),
                       config=dict(data.get("config") or {}), notes=list(data.get("notes") or []),
                       created=str(data.get("created", "")))
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a deploykit bench JSON ({exc}); write one with deploykit bench ... -o FILE") from exc


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # not on every platform
        return None


def environment_manifest(threads: int | None, load_before: float | None = None) -> dict[str, Any]:
    """environment.probe() plus the vector extensions, the thread count and the machine's load (1-minute
    average before and after the run): the things that shape CPU timings."""
    env = {**probe().to_dict(), "backends": {n: a.to_dict() for n, a in availabilities().items()}}
    flags = cpu_flags()
    env["cpu_flags"] = sorted(flags & {"avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni",
                                       "avx512_bf16", "amx_int8", "amx_bf16"})
    env["threads_requested"] = threads
    env["load_average_1m"] = {"before": load_before, "after": load_average()}
    return env


def busy_warning(load_before: float | None) -> str | None:
    """Other work on the machine distorts CPU timings badly (OpenMP barriers wait for descheduled threads)."""
    if load_before is None or load_before < 1.0:
        return None
    return (f"the machine was busy before the run (1-minute load average {load_before:.2f}); CPU timings suffer "
            "from other processes, especially with as many threads as cores: rerun on a quiet machine")


def _threads_used(target: BenchTarget, threads: int | None) -> int:
    if BENCH_CHOICES[target.backend].reference:
        import torch

        return int(torch.get_num_threads())
    return threads or (os.cpu_count() or 1)  # ORT's default: one intra-op thread per core


def bench_target(target: BenchTarget, batches: Sequence[int], input_shape: tuple[int, ...] | None,
                 config: TimingConfig, threads: int | None, progress: Progress,
                 skipped: list[Skipped]) -> list[BenchResult]:
    """Time one opened target at each batch; batches it cannot run are added to `skipped`. Efficiency is
    left for `apply_peaks`, once the machine's peaks are known."""
    results = []
    with target.runner as runner:
        specs = runner.input_specs()
        for batch in batches:
            try:
                shapes = resolve_shapes(specs, batch, input_shape, target.default_hw)
            except InputError as exc:
                skipped.append(Skipped(f"{target.backend} batch {batch}", str(exc)))
                continue
            feeds = input_pool(specs, shapes)
            first = shapes[specs[0].name]
            try:
                madds = target.madds_at(first)
            except Exception as exc:  # a count is a bonus; never lose the timing over it
                progress(f"could not count multiply-adds ({type(exc).__name__}: {exc}); GFLOP/s left out")
                madds = None
            how = f"{config.iterations} iterations" if config.iterations else f"{config.duration_s:g} s"
            label = f"{target.label} {target.backend} {target.precision} batch {batch}"
            progress(f"timing {label} at {'x'.join(map(str, first))} ({how}, {len(feeds)} distinct inputs)")
            timing = measure(runner, feeds, config, progress=progress, label=label)
            result = result_from_timing(
                timing, target=target.label, backend=target.backend, precision=target.precision, batch=batch,
                input_shape=first, mode=mode_of(runner), threads=_threads_used(target, threads),
                distinct_inputs=len(feeds), madds=madds, peak_gflops=None)
            result.madds_source = target.madds_source if madds else ""
            result.output_bytes = output_bytes(runner, feeds[0])
            results.append(result)
    return results


def output_bytes(runner: Runner, feed: Mapping[str, np.ndarray]) -> int | None:
    """Bytes one inference returns to the host (what a class-map head shrinks); None when it cannot run."""
    try:
        return int(sum(np.asarray(v).nbytes for v in runner.infer(feed).values()))
    except Exception:  # a figure for the report, never a reason to lose the timing
        return None


def apply_peaks(results: Sequence[BenchResult], peaks: Peaks) -> None:
    for result in results:
        if result.achieved_gflops is not None:
            result.efficiency_percent = 100 * result.achieved_gflops / peaks.gemm_gflops


def measure_peaks_twice(before: Peaks, threads: int | None, say: Progress) -> tuple[Peaks, str | None]:
    """Measure again after a run; the better of both, and a warning when they disagree."""
    after = _peaks(threads, say)
    warning = spread_warning(before, after)
    if warning:
        say(f"warning: {warning}")
    return best_of(before, after), warning


def check_batches(batches: Sequence[int]) -> None:
    if any(b <= 0 for b in batches):
        raise InputError(f"batch sizes must be positive; got {list(batches)}")


def bench_targets(targets: Sequence[BenchTarget], skipped: list[Skipped], *, name: str, batches: Sequence[int] = (1,),
                  input_shape: tuple[int, ...] | None = None, config: TimingConfig | None = None,
                  threads: int | None = None, roofline: bool = True, progress: Progress | None = None,
                  load_before: float | None = None) -> BenchReport:
    """Time each opened target at each batch (`name`: what was asked for, for the message when none can run).
    Backends that cannot run here are listed in `skipped`; `load_before`: the machine's load before the targets
    were opened."""
    say = progress or (lambda _msg: None)
    config = config or TimingConfig()
    check_batches(batches)
    if not targets:
        reasons = "; ".join(f"{s.backend}: {s.reason}" for s in skipped)
        raise BackendUnavailable(f"no requested backend can run {name} here ({reasons})")
    peaks = _peaks(threads, say) if roofline else None
    results: list[BenchResult] = []
    for opened in targets:
        results += bench_target(opened, batches, input_shape, config, threads, say, skipped)
    notes = [w for w in (busy_warning(load_before),) if w]
    if peaks is not None:
        peaks, warning = measure_peaks_twice(peaks, threads, say)
        notes += [warning] if warning else []
        apply_peaks(results, peaks)
    return BenchReport(results=results, skipped=skipped, environment=environment_manifest(threads, load_before),
                       peaks=peaks.to_dict() if peaks else None, config=config.to_dict(), notes=notes)


def _peaks(threads: int | None, say: Progress) -> Peaks:
    say("measuring this machine's fp32 GEMM and memory-copy peaks")
    return measure_peaks(threads)


def table_rows(report: BenchReport) -> list[list[object]]:
    rows: list[list[object]] = []
    for r in report.results:
        s = r.latency
        rows.append([r.target, r.backend, r.precision, r.batch, "x".join(map(str, r.input_shape)), s.min,
                     s.median, s.mean, s.p90, s.p95, s.p99, s.max, s.std, r.images_per_s, r.achieved_gflops,
                     r.efficiency_percent])
    return rows


def phase_rows(report: BenchReport) -> list[list[object]]:
    """GPU phases (median ms) for results that have them."""
    return [[r.target, r.backend, r.batch, *(r.phases[p].median if p in r.phases else None
                                             for p in ("h2d", "compute", "d2h", "enqueue"))]
            for r in report.results if r.phases]


def to_csv(report: BenchReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*HEADERS, "throughput qps", "iterations", "threads", "h2d median ms",
                     "compute median ms", "d2h median ms", "mode", "output bytes", "concurrency", "errors"])
    for r, row in zip(report.results, table_rows(report), strict=True):
        phases = [r.phases[p].median if p in r.phases else "" for p in ("h2d", "compute", "d2h")]
        writer.writerow([*("" if v is None else v for v in row), r.throughput_qps, r.latency.count, r.threads,
                         *phases, r.mode, "" if r.output_bytes is None else r.output_bytes,
                         "" if r.concurrency is None else r.concurrency, r.errors])
    return buffer.getvalue()


@dataclass
class Comparison:
    target: str
    backend: str
    precision: str
    batch: int
    input_shape: tuple[int, ...]
    change: Change
    baseline_target: str


@dataclass
class ComparisonReport:
    comparisons: list[Comparison]
    unmatched: list[str]  # current results with no counterpart in the baseline
    environment_differences: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"comparisons": [{**asdict(c), "change": c.change.to_dict()} for c in self.comparisons],
                "unmatched": self.unmatched, "environment_differences": self.environment_differences}


def _environment_differences(base: Mapping[str, Any], cur: Mapping[str, Any]) -> list[str]:
    notes = []
    for key in ("cpu", "cores", "threads_requested", "platform"):
        if base.get(key) != cur.get(key):
            notes.append(f"{key}: {base.get(key)} -> {cur.get(key)}")
    base_v, cur_v = base.get("versions") or {}, cur.get("versions") or {}
    for name in sorted(set(base_v) | set(cur_v)):
        if base_v.get(name) != cur_v.get(name):
            notes.append(f"{name}: {base_v.get(name, '-')} -> {cur_v.get(name, '-')}")
    return notes


def compare_reports(baseline: BenchReport, current: BenchReport, *, min_change: float = 0.02) -> ComparisonReport:
    """Match results by (target, backend, precision, batch, shape); when none match and each side has one
    result per (batch, shape), compare across targets (e.g. a model's fp32 file against its int8 file)."""
    by_key = {r.key: r for r in baseline.results}
    pairs = [(r, by_key[r.key]) for r in current.results if r.key in by_key]
    if not pairs:
        def loose(results: list[BenchResult]) -> dict[tuple[int, tuple[int, ...]], BenchResult]:
            groups: dict[tuple[int, tuple[int, ...]], list[BenchResult]] = {}
            for r in results:
                groups.setdefault((r.batch, r.input_shape), []).append(r)
            return {k: v[0] for k, v in groups.items() if len(v) == 1}
        base_loose, cur_loose = loose(baseline.results), loose(current.results)
        pairs = [(cur_loose[k], base_loose[k]) for k in cur_loose if k in base_loose]
    matched = {id(c) for c, _ in pairs}
    comparisons = []
    for cur, base in pairs:
        if not base.samples_ms:
            raise InputError(f"the baseline result for {base.target} has no samples; rerun it with deploykit bench "
                             "-o FILE (the JSON keeps every sample)")
        change = compare_samples(base.samples_ms, cur.samples_ms, min_change=min_change)
        comparisons.append(Comparison(cur.target, cur.backend, cur.precision, cur.batch, cur.input_shape, change,
                                      base.target))
    unmatched = [f"{r.target} {r.backend} {r.precision} batch {r.batch}" for r in current.results
                 if id(r) not in matched]
    return ComparisonReport(comparisons, unmatched,
                            _environment_differences(baseline.environment, current.environment))
