"""The one timing core: warm-up per contender, round-robin rounds in a rotating order, an untimed pause between
contenders, round counts, phase times, progress, and the machine's load beside the samples."""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import pytest

from deploykit.bench.interleave import (
    SETTLE_MAX_S,
    SETTLE_WINDOW_S,
    TimingConfig,
    phase_times,
    rotated,
    settle,
    time_interleaved,
)
from deploykit.types import Progressed

EXACT = TimingConfig(warmup_s=0.0, duration_s=0.0, iterations=6, min_warmup_iterations=2, pause_s=0.0)


class Meter:
    """A scripted RoundMeter: the rounds listed in `disturbed` had other processes on the CPU."""

    def __init__(self, disturbed: Collection[int] = ()) -> None:
        self.marked = set(disturbed)
        self.rounds = 0

    def round_done(self) -> None:
        self.rounds += 1

    def quiet_so_far(self) -> int:
        return sum(1 for i in range(self.rounds) if i not in self.marked)

    def finish(self) -> list[float]:
        return [1.0 if i in self.marked else 0.0 for i in range(self.rounds)]


def test_every_contender_warms_up_then_runs_once_per_round_in_a_rotating_order() -> None:
    calls: list[tuple[str, int]] = []
    steps = {name: (lambda i, name=name: calls.append((name, i))) for name in "abc"}
    run = time_interleaved(steps, EXACT)
    warm = calls[:6]
    assert warm == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]  # each contender's own warm-up
    rounds = [calls[6 + 3 * r: 9 + 3 * r] for r in range(6)]
    assert [[name for name, _ in round_] for round_ in rounds] == [rotated("abc", r) for r in range(6)]
    assert all(i == 2 + r for r, round_ in enumerate(rounds) for _, i in round_)  # round r: input 2 + r
    assert run.rounds == 6 and all(len(t.samples_ms) == 6 and t.warmup_iterations == 2 for t in run.timings.values())
    assert rotated("abc", 1) == ["b", "c", "a"] and rotated("abc", 3) == ["a", "b", "c"]


class Clock:
    """A fake perf_counter and sleep: time passes only when a step or a pause says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from deploykit.bench import interleave

    fake = Clock()
    monkeypatch.setattr(interleave.time, "perf_counter", fake.perf_counter)
    monkeypatch.setattr(interleave.time, "sleep", fake.sleep)
    return fake


def test_round_i_of_every_contender_is_sample_i(clock: Clock) -> None:
    def step(ms: float) -> Callable[[int], None]:
        def run(i: int) -> None:
            clock.now += ms * (3 if i - 1 in (2, 4) else 1) / 1e3  # one warm-up call, then input 1 + round
        return run
    config = TimingConfig(warmup_s=0.0, iterations=6, min_warmup_iterations=1, pause_s=0.05)
    run = time_interleaved({"x": step(20.0), "y": step(10.0)}, config, meter=Meter())
    assert run.timings["x"].samples_ms == pytest.approx([20, 20, 60, 20, 60, 20])
    assert run.timings["y"].samples_ms == pytest.approx([10, 10, 30, 10, 30, 10])
    assert run.timings["x"].walltime_s == pytest.approx(0.2)  # the timed calls only


def test_a_pause_comes_before_every_call_when_there_are_several_contenders(clock: Clock) -> None:
    config = TimingConfig(warmup_s=0.0, iterations=3, min_warmup_iterations=1, pause_s=0.05)
    run = time_interleaved({"a": lambda i: None, "b": lambda i: None}, config, meter=Meter())
    assert clock.pauses == [0.05] * 6 and all(s == 0 for t in run.timings.values() for s in t.samples_ms)
    clock.pauses.clear()
    time_interleaved({"alone": lambda i: None}, config, meter=Meter())
    assert clock.pauses == []  # one contender: nobody's spinning threads to wait for


def test_the_pause_waits_for_the_last_contenders_threads_to_stop_spinning(clock: Clock,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A contender whose worker threads spin on after it returns (ONNX Runtime's intra-op pool does, for more
    than 50 ms on a 2-core EPYC) must not share the cores with the next call: the pause lasts until this
    process's threads are idle, in SETTLE_WINDOW_S steps, at most SETTLE_MAX_S. Here a spinner keeps one core
    busy for 0.12 s after each timed call of "spins" (process time advances with the clock while it spins)."""
    from deploykit.bench import interleave

    spin_until = [0.0]
    used = [0.0]
    clock_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        used[0] += max(0.0, min(clock.now + seconds, spin_until[0]) - clock.now)
        clock_sleep(seconds)

    monkeypatch.setattr(interleave.time, "sleep", sleep)
    monkeypatch.setattr(interleave.time, "process_time", lambda: used[0])
    early: list[float] = []  # how long before the spinner's end each call of "watches" came

    def spins(i: int) -> None:
        if i >= 1:  # timed rounds only (one warm-up call)
            spin_until[0] = clock.now + 0.12

    def watches(i: int) -> None:
        early.append(spin_until[0] - clock.now)

    config = TimingConfig(warmup_s=0.0, iterations=3, min_warmup_iterations=1, pause_s=0.02)
    time_interleaved({"spins": spins, "watches": watches}, config, meter=Meter())
    assert len(early) == 4 and max(early[1:]) <= 0.0 < spin_until[0]  # never while the spinner runs
    assert SETTLE_WINDOW_S in clock.pauses  # it waited on in windows
    spin_until[0] = clock.now + 10.0  # a thread that never idles: the pause gives up at SETTLE_MAX_S
    assert settle(0.02) == pytest.approx(SETTLE_MAX_S, abs=SETTLE_WINDOW_S)


def test_duration_counts_per_contender_with_the_pauses(clock: Clock) -> None:
    config = TimingConfig(warmup_s=0.0, duration_s=1.0, min_iterations=1, min_warmup_iterations=0,
                          pause_s=0.0625)  # binary fractions: the clock adds up exactly

    def busy(i: int) -> None:
        clock.now += 0.0625
    run = time_interleaved({"a": busy, "b": busy}, config, meter=Meter())
    assert run.rounds == 8  # 2 s for 2 contenders; a round takes 2 x (pause + call) = 0.25 s
    run = time_interleaved({"a": busy, "b": busy}, config, meter=Meter(disturbed=range(0, 40, 2)))
    assert run.rounds == 8 and run.load.rounds == 16  # every other round disturbed: twice the time


def test_disturbed_rounds_are_set_aside_and_made_up_for() -> None:
    calls: list[int] = []
    run = time_interleaved({"a": lambda i: calls.append(i), "b": lambda i: None}, EXACT, meter=Meter({1, 3}))
    assert run.rounds == 6 and len(calls) == 2 + 8  # two more rounds make up for the two set aside
    assert all(len(t.samples_ms) == 6 and len(t.set_aside_ms) == 2 for t in run.timings.values())
    assert (run.load.rounds, run.load.rounds_set_aside, run.load.disturbed_throughout) == (8, 2, False)
    assert "2 of 8 rounds set aside" in run.load.describe()


def test_a_machine_disturbed_throughout_keeps_the_least_disturbed_rounds_and_says_so() -> None:
    run = time_interleaved({"a": lambda i: None}, EXACT, meter=Meter(range(100)))
    assert run.rounds == 6 and run.load.rounds == 18  # it tried three times the rounds, then kept six
    assert run.load.disturbed_throughout and run.load.busy
    assert "during most of the 18 rounds; the 6 least disturbed are in the figures" in (run.load.warning() or "")


def test_the_least_disturbed_rounds_fill_in_when_too_few_are_quiet() -> None:
    class Shares(Meter):
        def finish(self) -> list[float]:
            return [0.0 if i == 2 else 0.5 if i % 2 else 2.0 for i in range(self.rounds)]

    config = TimingConfig(warmup_s=0.0, iterations=4, min_warmup_iterations=0, pause_s=0.0)
    run = time_interleaved({"a": lambda i: i}, config, meter=Shares(range(100)))
    assert run.load.rounds == 12 and run.rounds == 4
    assert len(run.timings["a"].set_aside_ms) == 8  # rounds 1, 2, 3, 5 kept: the quiet one and three at 0.5


def test_rounds_have_a_minimum_and_something_to_time() -> None:
    config = TimingConfig(warmup_s=0.0, duration_s=0.0, min_iterations=4, min_warmup_iterations=0, pause_s=0.0)
    assert time_interleaved({"a": lambda i: None, "b": lambda i: None}, config).rounds == 4
    with pytest.raises(ValueError):
        time_interleaved({}, config)


def test_phase_times_from_the_tensorrt_runner_format() -> None:
    outputs = {"output": np.zeros(3)}
    times = {"h2d_ms": 0.5, "compute_ms": 2.0, "d2h_ms": 0.25, "latency_ms": 2.75, "enqueue_ms": 0.1}
    assert phase_times((outputs, times)) == {"h2d": 0.5, "compute": 2.0, "d2h": 0.25, "enqueue": 0.1}
    assert phase_times(outputs) is None
    run = time_interleaved({"trt": lambda i: (outputs, times), "cpu": lambda i: outputs}, EXACT)
    assert run.timings["trt"].phases_ms["compute"] == [2.0] * 6 and run.timings["cpu"].phases_ms == {}


def test_progress_counts_rounds_or_the_time_budget() -> None:
    events: list[object] = []
    time_interleaved({"a": lambda i: None}, EXACT, progress=events.append, label="m")
    assert events == [Progressed("timing m (rounds)", k, 6) for k in range(1, 7)]
    events.clear()  # rounds set aside are made up for, and the count stays that of the undisturbed ones
    time_interleaved({"a": lambda i: None}, EXACT, progress=events.append, label="m", meter=Meter({0, 2, 4}))
    assert events == [Progressed("timing m (rounds)", k, 6) for k in range(1, 7)]
    events.clear()
    config = TimingConfig(warmup_s=0.0, duration_s=0.0, min_iterations=3, pause_s=0.0)
    time_interleaved({"a": lambda i: None}, config, progress=events.append, label="m")
    assert events[-1] == Progressed("timing m (% of the time)", 100, 100)  # closed even when time ran out early


def test_the_load_around_the_run_is_recorded() -> None:
    run = time_interleaved({"a": lambda i: None}, EXACT)
    load = run.load
    assert load.cores >= 1 and load.seconds >= 0
    assert load.load_before is None or load.load_before >= 0
