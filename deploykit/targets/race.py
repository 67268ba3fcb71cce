"""`--backend auto` on a CPU, measured: build every ready CPU backend's artifact from the same precision graph,
time them interleaved on the model's input, keep the fastest.

Which backends race: those of the table with a positive `auto_rank`, `device` "cpu", ready here, and the Q/DQ
layout of the one the table would pick (the precision graph is built once, for that layout; a layout given
with --qdq-layout applies to all). Where the table picks a GPU backend (TensorRT with a working builder), auto
stays with it: there is nothing to measure against on the CPU.

Timing: deploykit.bench.interleave, the one way deploykit times contenders: WARMUP untimed calls per candidate,
then RUNS round-robin rounds on the same random input (batch 1, the model's input size), the order rotating
and an untimed pause between candidates. The fastest median wins, unless the bootstrap interval of its ratio
to a slower candidate's median contains 1: tied candidates keep the table's preference (`auto_rank`), since the
run cannot tell them apart. Each median with its p10-p90 spread, each ratio with its interval, the machine's
load and the reason are recorded in the sidecar (build_options["auto"]) and in the build's backend note.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from deploykit.backends.base import BACKENDS, FILE_SUFFIXES, Backend, Compiled, resolve_backend
from deploykit.bench.interleave import Interleaved, TimingConfig, time_interleaved
from deploykit.bench.stats import Ratio, median_ratio, summarize
from deploykit.build import Chosen
from deploykit.environment import cpu_model
from deploykit.io.output_checks import check_output_path
from deploykit.io.sidecar import sidecar_path
from deploykit.runner import Runner
from deploykit.types import Progress

RUNS = 12  # rounds: enough to tell apart backends 10% apart; closer ones tie and keep the table's preference
WARMUP = 2
TIMING = TimingConfig(warmup_s=0.0, iterations=RUNS, min_warmup_iterations=WARMUP)
DEFAULT_SIDE = 224  # a dynamic spatial dimension without a recorded input size


@dataclass(frozen=True)
class Standing:
    """The race's outcome: the winner, and every candidate's median, spread and ratio to the winner."""

    winner: str
    medians_ms: dict[str, float]
    spread_ms: dict[str, tuple[float, float]]  # p10, p90
    slower: dict[str, Ratio]  # each other candidate's median over the winner's, with its interval
    reason: str
    run: Interleaved

    def record(self) -> dict[str, Any]:
        """What the sidecar keeps under build_options["auto"]."""
        return {"chosen": self.winner, "medians_ms": self.medians_ms,
                "spread_ms": {k: list(v) for k, v in self.spread_ms.items()},
                "ratios_to_chosen": {k: v.to_dict() for k, v in self.slower.items()}, "runs": self.run.rounds,
                "warmup": WARMUP, "pause_s": TIMING.pause_s, "load": self.run.load.to_dict(), "reason": self.reason}


@dataclass(frozen=True)
class Raced:
    winner: Backend
    path: Path  # where the winner's artifact now is
    compiled: Compiled
    standing: Standing

    @property
    def reason(self) -> str:
        return self.standing.reason

    def record(self) -> dict[str, Any]:
        return self.standing.record()


def candidates(asked: str | None, chosen: Backend, *, layout_given: bool) -> list[Backend]:
    """The CPU backends an explicit `--backend auto` races (none when only one qualifies, or the table's pick is
    not a CPU backend)."""
    if asked != "auto" or chosen.device != "cpu":
        return []
    racers = [b for b in BACKENDS.values() if b.auto_rank > 0 and b.device == "cpu"
              and (layout_given or b.qdq_layout == chosen.qdq_layout) and b.availability().ready]
    return racers if len(racers) > 1 else []


def artifact_for(out: Path, entry: Backend) -> Path:
    """OUT when its suffix is one of `entry`'s, else OUT's name without the known artifact suffixes plus
    `entry`'s (model.ort.onnx -> model.xml when OpenVINO wins)."""
    if out.suffix.lower() in entry.suffixes:
        return out
    stem = out.name
    while any(stem.endswith(s) and len(stem) > len(s) for s in FILE_SUFFIXES):
        stem = next(stem[: -len(s)] for s in FILE_SUFFIXES if stem.endswith(s) and len(stem) > len(s))
    return out.with_name(stem + entry.suffix)


def check_outputs(out: Path, racers: Sequence[Backend], *, force: bool) -> None:
    """Refuse before building when any racer's artifact (or its companions or sidecar) would overwrite a file."""
    for entry in racers:
        target = artifact_for(out, entry)
        for path in (*entry.files(target), sidecar_path(target)):
            check_output_path(path, force=force)


def _feed(runner: Runner, input_size: tuple[int, int] | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {}
    for spec in runner.input_specs():
        side = list(input_size or (DEFAULT_SIDE, DEFAULT_SIDE))
        shape: list[int] = []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            else:
                shape.append(1 if axis == 0 else side.pop(0) if side else DEFAULT_SIDE)
        feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feed


def standing(run: Interleaved, shapes: str, preferred: Sequence[str]) -> Standing:
    """Rank a timed race (module docstring): `preferred` lists the candidates in the table's order of preference,
    which breaks ties the timing cannot resolve."""
    samples = {name: timing.samples_ms for name, timing in run.timings.items()}
    stats = {name: summarize(values) for name, values in samples.items()}
    fastest = min(samples, key=lambda name: stats[name].median)
    ratios = {name: median_ratio(samples[name], samples[fastest], paired=True) for name in samples if name != fastest}
    tied = [fastest, *(name for name, ratio in ratios.items() if ratio.tied)]
    winner = min(tied, key=lambda name: preferred.index(name) if name in preferred else len(preferred))
    if winner != fastest:  # ratios are stated against the one kept
        ratios = {name: median_ratio(samples[name], samples[winner], paired=True)
                  for name in samples if name != winner}
    title = BACKENDS[winner].title
    others = "; ".join(f"{BACKENDS[n].title} {stats[n].median:.3g} ms, {ratios[n].text()} of it"
                       for n in sorted(ratios, key=lambda n: stats[n].median))
    how = (f"{run.rounds} interleaved rounds on {shapes}, measured at build time on {_cpu()}; "
           f"{run.load.describe()}")
    if winner == fastest and not any(ratio.tied for ratio in ratios.values()):
        reason = f"{title} was the fastest here: median {stats[winner].median:.3g} ms against {others} ({how})"
    else:
        reason = (f"{title} kept as the table's preference: the others were as fast within this run's noise (a "
                  f"ratio interval containing 1); {title} {stats[winner].median:.3g} ms against {others} ({how})")
    return Standing(winner, {n: round(s.median, 3) for n, s in stats.items()},
                    {n: (round(s.p10 or s.min, 3), round(s.p90, 3)) for n, s in stats.items()}, ratios, reason, run)


def race(graph: Path, out: Path, racers: Sequence[Backend], *, input_size: tuple[int, int] | None, precision: str,
         force: bool, threads: int | None, progress: Progress, float_source: onnx.ModelProto | None = None) -> Raced:
    """Compile `graph` with every racer in a temporary folder beside OUT, time them, move the fastest's files
    into place (artifact_for(out, winner)); the others are deleted."""
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.auto.", dir=out.parent or Path(".")))
    try:
        built: dict[str, tuple[Path, Compiled]] = {}
        for entry in racers:
            path = folder / f"candidate{entry.suffix}"
            built[entry.name] = path, entry.compile(graph, path, None, precision=precision, force=True,
                                                    threads=threads, progress=progress, float_source=float_source)
        with ExitStack() as stack:
            runners = {name: stack.enter_context(BACKENDS[name].open(path, None, threads=threads))
                       for name, (path, _) in built.items()}
            feed = _feed(next(iter(runners.values())), input_size)
            shapes = ", ".join(f"{k}[{'x'.join(map(str, v.shape))}]" for k, v in feed.items())
            progress(f"auto: timing {', '.join(BACKENDS[n].title for n in runners)} on {shapes}, {RUNS} "
                     "interleaved rounds")
            run = time_interleaved({name: _step(runner, feed) for name, runner in runners.items()}, TIMING)
        preferred = [b.name for b in sorted(racers, key=lambda b: -b.auto_rank)]
        result = standing(run, shapes, preferred)
        winner = BACKENDS[result.winner]
        target = artifact_for(out, winner)
        source, compiled = built[winner.name]
        for src, dst in zip(winner.files(source), winner.files(target), strict=True):
            check_output_path(dst, force=force)
            os.replace(src, dst)
        return Raced(winner, target, compiled, result)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _step(runner: Runner, feed: dict[str, np.ndarray]) -> Any:
    runner.validate_feed(feed)  # once, before timing: the timed calls skip validation
    return lambda _i: runner.infer_unchecked(feed)


def _cpu() -> str:
    return f"{cpu_model()}, {os.cpu_count() or 1} cores"


@dataclass(frozen=True)
class Race:
    """deploykit.build's Racer for `--backend auto` on a CPU: compile the precision graph with every racer, keep
    the fastest (its medians, spreads, ratios and the reason go into the sidecar's build_options["auto"])."""

    racers: tuple[Backend, ...]

    def check_outputs(self, out: Path, *, force: bool) -> None:
        check_outputs(out, self.racers, force=force)

    def __call__(self, graph: Path, out: Path, *, input_size: tuple[int, int] | None, precision: str, force: bool,
                 threads: int | None, progress: Progress, float_source: onnx.ModelProto | None) -> Chosen:
        raced = race(graph, out, self.racers, input_size=input_size, precision=precision, force=force,
                     threads=threads, progress=progress, float_source=float_source)
        compiled = replace(raced.compiled, build_options={**raced.compiled.build_options, "auto": raced.record()})
        progress(f"auto: {raced.reason}")
        return Chosen(raced.winner, raced.path, compiled, raced.reason)


def choose_backend(asked: str | None, *, layout_given: bool) -> tuple[Backend, str, Race | None]:
    """The backend `--backend` names (None: the table's default), why, and the race an explicit `auto` runs on
    a CPU (see `candidates`; None when there is nothing to race): resolved once, handed to deploykit.build."""
    chosen, note = resolve_backend(asked)
    racers = candidates(asked, chosen, layout_given=layout_given)
    return chosen, note, Race(tuple(racers)) if racers else None
