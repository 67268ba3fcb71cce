"""The one way deploykit times contenders (bench, deploy, the backend race, the kernel sweep, benchmarks/).

- Warm-up, per contender: `warmup_s` seconds and at least `min_warmup_iterations` calls each (first runs
  allocate and pick kernels), untimed.
- Timed rounds, round-robin: each round calls every contender once, in an order that rotates by one each
  round, so a burst of other work on the machine lands on every contender alike instead of on whichever was
  being timed then. Timing each contender in turn let the same demo deploy state 1.40x and 1.94x on a quiet
  machine, and 10.68x beside bursty neighbours.
- An untimed pause before every call when there are several contenders, at least `pause_s` and then until
  this process's threads are idle (`settle`, at most SETTLE_MAX_S): the runtime that just ran leaves its worker
  threads spin-waiting (ONNX Runtime's intra-op pool, OpenMP), and they took the cores of the next one
  (benchmarks/bench_cpu_peers.py measured one graph at 15.7 and 37.2 ms in one run). A fixed 50 ms was not
  enough on a 2-core AMD EPYC with ONNX Runtime 1.32: four sessions of the trained MSI-Net round-robin took
  20 ms each with 50 ms pauses and 13.1 ms with 100 ms (12.5 ms alone); their pools spin past 50 ms.
- Rounds: exactly `iterations`, or until `duration_s` per contender of wall time has passed (pauses
  included) and at least `min_iterations` rounds ran (trtexec's defaults: 0.2 s warm-up, 3 s, 10 iterations).
  Each call is timed host to host with perf_counter: end-to-end latency, arrays in and arrays out.
- Disturbed rounds: a round during which other processes took more than bench.load.DISTURBED of a core is set
  aside (bursts of other work slow runtimes unequally, so they move the ratios, not just the milliseconds), and
  the rounds go on until as many undisturbed ones as asked for have run, up to EXTEND times the rounds or the
  time. When fewer than that are undisturbed, the figures take the asked number of least disturbed rounds and
  the machine's load says it was disturbed throughout. Set-aside samples are kept beside the others.
- Beside the samples: the machine's load before and after (deploykit.bench.load). Round i's sample of every
  contender is samples_ms[i], so two contenders' ratio can be bootstrapped by round (bench.stats.median_ratio).

A contender is `step(i)`, called with a running index (the i-th input of its pool); it may return phase
times (see phase_times), as the TensorRT runner's `infer_timed` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from deploykit.bench.load import DISTURBED, LoadProbe, MachineLoad, RoundMeter
from deploykit.types import Progress, Progressed

Step = Callable[[int], object]
PHASES = ("h2d", "compute", "d2h", "enqueue")
PAUSE_S = 0.02  # the least pause; `settle` waits on while the process's threads spin
SETTLE_WINDOW_S = 0.01
SETTLE_BUSY = 0.25  # of one core over a window: the process's threads are still spinning
SETTLE_MAX_S = 0.3  # a thread of the caller's that never idles must not stall the run
EXTEND = 3  # at most this many times the asked rounds (or time) to collect undisturbed rounds


@dataclass(frozen=True)
class TimingConfig:
    warmup_s: float = 0.2  # per contender
    duration_s: float = 3.0  # wall seconds per contender (the rounds take duration_s x contenders)
    iterations: int | None = None  # when set, exactly this many rounds (duration ignored)
    min_iterations: int = 10
    min_warmup_iterations: int = 2
    pause_s: float = PAUSE_S  # untimed, before each call, when there are several contenders (then `settle`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Timing:
    """One contender's share of a run."""

    samples_ms: list[float]
    walltime_s: float  # the timed calls' sum (pauses and the other contenders excluded)
    warmup_iterations: int
    phases_ms: dict[str, list[float]] = field(default_factory=dict)
    set_aside_ms: list[float] = field(default_factory=list)  # samples of disturbed rounds, not in the figures


@dataclass
class Interleaved:
    """A round-robin run: every contender's Timing (samples_ms[i] from round i) and the machine's load."""

    timings: dict[str, Timing]
    rounds: int  # the rounds in the figures
    load: MachineLoad  # with every round's count and those set aside


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


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """Round `round_index`'s order: the list turned by one place per round."""
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


def _warm_up(step: Step, config: TimingConfig) -> int:
    started = time.perf_counter()
    calls = 0
    while calls < config.min_warmup_iterations or time.perf_counter() - started < config.warmup_s:
        step(calls)
        calls += 1
    return calls


def _finished(config: TimingConfig, rounds: int, quiet: int, elapsed: float, contenders: int) -> bool:
    """Enough undisturbed rounds (or time in them), or EXTEND times what was asked for."""
    if config.iterations is not None:
        return quiet >= config.iterations or rounds >= EXTEND * config.iterations
    budget = config.duration_s * contenders
    quiet_time = elapsed * quiet / rounds if rounds else 0.0
    if quiet >= config.min_iterations and quiet_time >= budget:
        return True
    return rounds >= EXTEND * config.min_iterations and elapsed >= EXTEND * budget


def time_interleaved(steps: Mapping[str, Step], config: TimingConfig, *, progress: Progress | None = None,
                     label: str = "", report_every_s: float = 10.0, meter: RoundMeter | None = None) -> Interleaved:
    """Warm every contender up, then time them round-robin (module docstring). `meter`: what tells disturbed
    rounds apart (a RoundMeter reading /proc/stat unless given)."""
    if not steps:
        raise ValueError("nothing to time")
    names = list(steps)
    probe = LoadProbe()
    warm = {name: _warm_up(steps[name], config) for name in names}
    timings = {name: Timing([], 0.0, warm[name]) for name in names}
    phases: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    pause = config.pause_s if len(names) > 1 else 0.0
    counted, shown, rounds = _counted(config, label), 0, 0
    meter = meter or RoundMeter()
    started = last_report = time.perf_counter()
    while not _finished(config, rounds, meter.quiet_so_far(), time.perf_counter() - started, len(names)):
        for name in rotated(names, rounds):
            if pause:
                settle(pause)
            t0 = time.perf_counter()
            result = steps[name](warm[name] + rounds)
            timings[name].samples_ms.append((time.perf_counter() - t0) * 1e3)
            phases[name].append(phase_times(result) or {})
        rounds += 1
        meter.round_done()
        now = time.perf_counter()
        if progress and counted is not None:
            budget = config.duration_s * len(names)
            # rounds toward the asked number are the undisturbed ones: disturbed rounds extend the run, and
            # counting them showed "20/20" again at every round past the 20th
            done = (min(meter.quiet_so_far(), config.iterations) if config.iterations
                    else min(99, int(100 * (now - started) / budget) if budget else 99))
            if done > shown:
                progress(Progressed(counted, min(done, config.iterations or 100), config.iterations or 100))
                shown = done
        if progress and now - last_report >= report_every_s:
            medians = ", ".join(f"{n} {np.median(timings[n].samples_ms):.2f} ms" for n in names)
            progress(f"{label or 'timing'}: {rounds} rounds, medians so far {medians}")
            last_report = now
    if progress and counted is not None and shown < (config.iterations or 100):
        progress(Progressed(counted, config.iterations or 100, config.iterations or 100))
    kept, throughout = _kept_rounds(meter.finish(), config)
    for name in names:
        _keep(timings[name], phases[name], set(kept))
    return Interleaved(timings, len(kept), probe.stop(rounds, rounds - len(kept), throughout))


def settle(least_s: float, most_s: float = SETTLE_MAX_S) -> float:
    """Sleep at least `least_s`, then on in SETTLE_WINDOW_S steps while this process's threads used SETTLE_BUSY
    of a core or more over the last sleep (the last contender's worker pools still spin), at most `most_s` in
    all; the time slept. time.process_time counts every thread of this process and nothing of others."""
    start, wait = time.perf_counter(), least_s
    while True:
        used, slept_from = time.process_time(), time.perf_counter()
        time.sleep(wait)
        now = time.perf_counter()
        if time.process_time() - used < SETTLE_BUSY * (now - slept_from) or now - start >= most_s:
            return now - start
        wait = SETTLE_WINDOW_S


def _kept_rounds(shares: Sequence[float], config: TimingConfig) -> tuple[list[int], bool]:
    """The rounds in the figures (in order), and whether some of them were disturbed: every undisturbed round
    when there are as many as asked for (with `iterations`, exactly that many), else the asked number of least
    disturbed ones."""
    quiet = [i for i, share in enumerate(shares) if share < DISTURBED]
    asked = config.iterations or config.min_iterations
    if len(quiet) >= asked:
        return (quiet[:config.iterations] if config.iterations else quiet), False
    least = sorted(sorted(range(len(shares)), key=lambda i: shares[i])[:asked])
    return least, any(shares[i] >= DISTURBED for i in least)


def _keep(timing: Timing, phases: list[dict[str, float]], kept: set[int]) -> None:
    """Only the kept rounds' samples in the figures; the others beside them."""
    samples = timing.samples_ms
    timing.samples_ms = [ms for i, ms in enumerate(samples) if i in kept]
    timing.set_aside_ms = [ms for i, ms in enumerate(samples) if i not in kept]
    timing.walltime_s = sum(timing.samples_ms) / 1e3
    for i, found in enumerate(phases):
        if i in kept:
            for phase, ms in found.items():
                timing.phases_ms.setdefault(phase, []).append(ms)


def _counted(config: TimingConfig, label: str) -> str | None:
    """What the progress bar counts: rounds when their number is set, else percent of the time budget (the
    loop also runs min_iterations rounds, so it may finish past 100% of the time)."""
    if not label:
        return None
    return f"timing {label} (rounds)" if config.iterations else f"timing {label} (% of the time)"
