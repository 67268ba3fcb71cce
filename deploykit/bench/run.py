"""`deploykit bench TARGET...` as a library call on opened targets (deploykit.targets.bench opens them): time every
target, backend and batch round-robin, attach the environment manifest and the machine's peaks, render tables/CSV,
and compare against a saved baseline."""

from __future__ import annotations

import csv
import datetime
import io
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from deploykit.backends.base import BENCH_CHOICES, availabilities
from deploykit.bench.harness import (
    BenchResult,
    FixedBatch,
    check_pool_fits,
    input_pool,
    mode_of,
    resolve_shapes,
    result_from_timing,
    step_for,
)
from deploykit.bench.interleave import TimingConfig, time_interleaved
from deploykit.bench.load import MachineLoad
from deploykit.bench.roofline import Peaks, best_of, measure_peaks, spread_warning
from deploykit.bench.runners import BenchTarget, Skipped
from deploykit.bench.stats import Change, compare_samples
from deploykit.environment import probe
from deploykit.errors import BackendUnavailable, InputError
from deploykit.runner import Runner
from deploykit.types import Progress

HEADERS = ["target", "backend", "precision", "batch", "input", "min ms", "p10 ms", "median ms", "mean ms",
           "p90 ms", "p95 ms", "p99 ms", "max ms", "std ms", "images/s", "GFLOP/s", "% GEMM peak"]
PeaksRecord = tuple[Peaks, str | None]


@dataclass
class BenchReport:
    results: list[BenchResult]
    skipped: list[Skipped]
    environment: dict[str, Any]
    peaks: dict[str, Any] | None
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    load: MachineLoad | None = None  # the machine's load around the timing (deploykit.bench.load)

    def machine(self) -> str:
        return describe_machine(self.environment)

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "skipped": [asdict(s) for s in self.skipped],
                "environment": self.environment, "peaks": self.peaks, "config": self.config,
                "notes": self.notes, "created": self.created, "load": self.load.to_dict() if self.load else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchReport:
        environment = data.get("environment") or {}
        if not isinstance(environment, dict) or not isinstance(environment.get("versions") or {}, dict):
            raise InputError("its environment is not an object with an object of versions (an edited file); "
                             "write one with deploykit bench ... -o FILE")
        if not isinstance(data.get("results"), list):  # a {} would read as a run of nothing, compared with nothing
            raise InputError("its results are not a list (an edited file); write one with deploykit bench ... -o FILE")
        try:
            return cls(results=[BenchResult.from_dict(r) for r in data["results"]],
                       skipped=[Skipped(**s) for s in data.get("skipped", [])],
                       environment=dict(data.get("environment") or {}), peaks=data.get("peaks"),
                       config=dict(data.get("config") or {}), notes=list(data.get("notes") or []),
                       created=str(data.get("created", "")),
                       load=MachineLoad.from_dict(data["load"]) if data.get("load") else None)
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a deploykit bench JSON ({exc}); write one with deploykit bench ... -o FILE") from exc


def describe_machine(environment: Mapping[str, Any]) -> str:
    """'AMD EPYC, 2 cores (avx2, fma, f16c)': the CPU the figures belong to, from environment_manifest's record."""
    flags = ", ".join(environment.get("cpu_flags") or [])
    return (f"{environment.get('cpu') or 'an unknown CPU'}, {environment.get('cores', '?')} cores"
            + (f" ({flags})" if flags else ""))


def environment_manifest(threads: int | None, load: MachineLoad | None = None) -> dict[str, Any]:
    """environment.probe() (vector extensions included) plus the thread count and the machine's load around the
    timing (1-minute average before and after): the things that shape CPU timings."""
    env = {**probe().to_dict(), "backends": {n: a.to_dict() for n, a in availabilities().items()}}
    env["threads_requested"] = threads
    if load is not None:
        env["load_average_1m"] = {"before": load.load_before, "after": load.load_after}
        env["load"] = load.to_dict()
    return env


def _threads_used(target: BenchTarget, threads: int | None) -> int:
    if BENCH_CHOICES[target.backend].reference:
        import torch

        return int(torch.get_num_threads())
    return threads or (os.cpu_count() or 1)  # ORT's default: one intra-op thread per core


@dataclass
class _Contender:
    """One (opened target, batch) to time, with what its result needs."""

    target: BenchTarget
    runner: Runner
    batch: int
    shape: tuple[int, ...]
    feeds: list[dict[str, np.ndarray]]
    madds: int | None

    @property
    def name(self) -> str:
        return f"{self.target.label} {self.target.backend} {self.target.precision} batch {self.batch}"


def _contenders(targets: Sequence[BenchTarget], stack: ExitStack, batches: Sequence[int],
                input_shape: tuple[int, ...] | None, progress: Progress,
                skipped: list[Skipped]) -> list[_Contender]:
    """Enter every target's runner and prepare each batch it can run; batches it cannot are added to
    `skipped`."""
    found = []
    for target in targets:
        runner = stack.enter_context(target.runner)
        specs = runner.input_specs()
        for batch in batches:
            try:
                shapes = resolve_shapes(specs, batch, input_shape, target.default_hw)
                activations = target.activations_at(shapes[specs[0].name]) if target.activations_at else None
                check_pool_fits(specs, shapes, activations)
            except InputError as exc:
                skipped.append(Skipped(f"{target.backend} batch {batch}", str(exc),
                                       batch_refused=isinstance(exc, FixedBatch)))
                continue
            first = shapes[specs[0].name]
            try:
                madds = target.madds_at(first)
            except Exception as exc:  # a count is a bonus; never lose the timing over it
                progress(f"could not count multiply-adds ({type(exc).__name__}: {exc}); GFLOP/s left out")
                madds = None
            found.append(_Contender(target, runner, batch, first, input_pool(specs, shapes), madds))
    return found


def time_contenders(contenders: Sequence[_Contender], config: TimingConfig, threads: int | None,
                    progress: Progress) -> tuple[list[BenchResult], MachineLoad]:
    """Time every contender in one round-robin run (deploykit.bench.interleave); efficiency is left for
    `apply_peaks`, once the machine's peaks are known."""
    how = f"{config.iterations} rounds" if config.iterations else f"{config.duration_s:g} s each"
    names = "; ".join(f"{c.name} at {'x'.join(map(str, c.shape))}" for c in contenders)
    progress(f"timing {names} ({'round-robin, ' if len(contenders) > 1 else ''}{how})")
    steps = {c.name: step_for(c.runner, c.feeds) for c in contenders}
    if len(steps) < len(contenders):  # one would be timed and reported for both (distinct_labels prevents it)
        raise ValueError(f"contenders share a name: {names}")
    label = contenders[0].name if len(contenders) == 1 else f"{len(contenders)} contenders round-robin"
    run = time_interleaved(steps, config, progress=progress, label=label)
    run_id = uuid.uuid4().hex[:12]
    results = []
    for contender in contenders:
        target = contender.target
        result = result_from_timing(
            run.timings[contender.name], target=target.label, backend=target.backend, precision=target.precision,
            batch=contender.batch, input_shape=contender.shape, mode=mode_of(contender.runner),
            threads=_threads_used(target, threads), distinct_inputs=len(contender.feeds), madds=contender.madds,
            peak_gflops=None, run_id=run_id)
        result.madds_source = target.madds_source if contender.madds else ""
        result.output_bytes = output_bytes(contender.runner, contender.feeds[0])
        results.append(result)
    return results, run.load


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


PEAKS_MESSAGE = "measuring this machine's fp32 GEMM and memory-copy peaks"


def measure_peaks_around(threads: int | None, say: Progress, *, quick: bool = False) -> Callable[[], PeaksRecord]:
    """Measure the peaks now; the returned call measures them again (after a run) and gives the better of
    both, with a warning when they disagree (another process busy during one measurement lowers it)."""
    say(f"{PEAKS_MESSAGE} (before and after timing)")
    before = measure_peaks(threads, quick=quick)

    def after() -> PeaksRecord:
        again = measure_peaks(threads, quick=quick)
        warning = spread_warning(before, again)
        if warning:
            say(f"warning: {warning}")
        return best_of(before, again), warning
    return after


def check_batches(batches: Sequence[int]) -> None:
    if any(b <= 0 for b in batches):
        raise InputError(f"batch sizes must be positive; got {list(batches)}")
    repeated = sorted({b for b in batches if list(batches).count(b) > 1})
    if repeated:  # a repeated batch would be one contender shown twice
        raise InputError(f"batch {', '.join(map(str, repeated))} is given twice in {list(batches)}; give each batch "
                         "once")


def distinct_labels(targets: Sequence[BenchTarget]) -> list[BenchTarget]:
    """The targets, those sharing a label with an earlier one (the same file given twice, a/model.onnx and
    b/model.onnx, a backend named twice) numbered in the order given ('model.onnx #2'): contenders are told
    apart by name, so two of one name were timed as one and shown twice with the same samples."""
    seen: dict[tuple[str, str, str], int] = {}
    out = []
    for target in targets:
        key = (target.label, target.backend, target.precision)
        seen[key] = seen.get(key, 0) + 1
        out.append(replace(target, label=f"{target.label} #{seen[key]}") if seen[key] > 1 else target)
    return out


def bench_targets(targets: Sequence[BenchTarget], skipped: list[Skipped], *, name: str, batches: Sequence[int] = (1,),
                  input_shape: tuple[int, ...] | None = None, config: TimingConfig | None = None,
                  threads: int | None = None, roofline: bool = True, progress: Progress | None = None,
                  quick_peaks: bool = False) -> BenchReport:
    """Time every opened target at each batch, all in one round-robin run (deploykit.bench.interleave); `name`:
    what was asked for, for the message when none can run. Backends and batches that cannot run here are listed
    in `skipped`. `quick_peaks`: the machine's peaks from shorter measurements (roofline.measure_peaks(quick=True)),
    as deploy takes them."""
    say = progress or (lambda _msg: None)
    config = config or TimingConfig()
    check_batches(batches)
    if not targets:
        reasons = "; ".join(f"{s.backend}: {s.reason}" for s in skipped)
        raise BackendUnavailable(f"no requested backend can run {name} here ({reasons})")
    with ExitStack() as stack:
        contenders = _contenders(distinct_labels(targets), stack, batches, input_shape, say, skipped)
        if not contenders:  # nothing would be timed: a report of nothing must not read as done
            reasons = "; ".join(f"{s.backend}: {s.reason}" for s in skipped)
            batch_hint = ("; choose a batch the model accepts (--batch 1 for a fixed-batch model)"
                          if any(s.batch_refused for s in skipped) else "")  # other reasons say their fix
            raise InputError(f"nothing to time: no requested batch can run {name} ({reasons}){batch_hint}")
        peaks_after = measure_peaks_around(threads, say, quick=quick_peaks) if roofline else None
        results, load = time_contenders(contenders, config, threads, say)
    notes = [w for w in (load.warning() if load else None,) if w]
    peaks = None
    if peaks_after is not None:
        peaks, warning = peaks_after()
        notes += [warning] if warning else []
        apply_peaks(results, peaks)
    return BenchReport(results=results, skipped=skipped, environment=environment_manifest(threads, load),
                       peaks=peaks.to_dict() if peaks else None, config=config.to_dict(), notes=notes,
                       load=load)


def table_rows(report: BenchReport) -> list[list[object]]:
    rows: list[list[object]] = []
    for r in report.results:
        s = r.latency
        rows.append([r.target, r.backend, r.precision, r.batch, "x".join(map(str, r.input_shape)), s.min, s.p10,
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
