"""What else the machine did while deploykit timed: the 1-minute load average before and after, and the CPU
time other processes took meanwhile, over the whole run and round by round.

The load average counts deploykit's own threads too (a deploy that just exported and calibrated a model
leaves it near the core count on a quiet machine), so the warnings rest on the other processes' share:
the busy time of every CPU (/proc/stat: user, nice, system, irq, softirq and steal, which is another
virtual machine's use of the same cores) minus this process's own CPU time, over the timed seconds. Where
/proc/stat is missing, the load average alone decides and no round is measured.

Round by round (RoundMeter): a round during which other processes kept DISTURBED of a core busy is disturbed:
bursts of other work slow runtimes unequally (OpenMP's static schedules wait for a descheduled thread, ONNX
Runtime's pool rebalances), so they move the ratios between contenders, not just the milliseconds. The kernel
counts CPU time in ticks of 10 ms, so rounds shorter than WINDOW_S are measured together.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

BUSY_SHARE = 0.25  # other processes keeping a quarter of a core busy on average distort CPU timings visibly
DISTURBED = 0.15  # cores other processes kept busy during one round that make it a disturbed round
WINDOW_S = 0.1  # the shortest stretch whose CPU time is read (10 ms ticks: +-0.1 core on 2 cores at worst)
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal in /proc/stat's cpu line


def load_average() -> float | None:
    """The 1-minute load average, None where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _busy_seconds() -> float | None:
    """Seconds every CPU together spent busy since boot, from /proc/stat (None off Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    return sum(ticks[i] for i in BUSY_FIELDS if i < len(ticks)) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclass(frozen=True)
class MachineLoad:
    """The machine's load around one timing run."""

    cores: int
    seconds: float  # how long the run took
    load_before: float | None  # 1-minute load average
    load_after: float | None
    others_cores: float | None  # cores other processes kept busy on average during the run (None: unknown)
    rounds: int = 0  # timed rounds, set aside ones included (0: not a round-robin run)
    rounds_set_aside: int = 0  # rounds left out of the figures, the most disturbed
    disturbed_throughout: bool = False  # too few undisturbed rounds: the figures include disturbed ones

    @property
    def busy(self) -> bool:
        if self.disturbed_throughout:
            return True
        if self.others_cores is not None:
            return self.others_cores >= BUSY_SHARE
        return max(self.load_before or 0.0, self.load_after or 0.0) >= self.cores / 2

    def describe(self) -> str:
        """One clause: '1-minute load average 0.4 before, 2.1 after; other processes kept 0.05 of 2 cores busy;
        3 of 40 rounds set aside (disturbed)'."""
        after = "" if self.load_after is None and self.load_before is not None else f", {_num(self.load_after)} after"
        shown = [f"1-minute load average {_num(self.load_before)} before{after}"]
        if self.others_cores is not None:
            shown.append(f"other processes kept {self.others_cores:.2f} of {self.cores} cores busy")
        if self.disturbed_throughout:
            shown.append(f"other processes took more than {DISTURBED:g} of a core during most of the {self.rounds} "
                         f"rounds; the {self.rounds - self.rounds_set_aside} least disturbed are in the figures")
        elif self.rounds_set_aside:
            shown.append(f"{self.rounds_set_aside} of {self.rounds} rounds set aside (other processes took more "
                         f"than {DISTURBED:g} of a core during them)")
        return "; ".join(shown)

    def warning(self) -> str | None:
        """The report's warning when other work shared the CPU during timing (None on a quiet machine)."""
        if not self.busy:
            return None
        if self.rounds_set_aside and not self.disturbed_throughout:
            return (f"the machine was busy while timing ({self.describe()}): the figures come from the undisturbed "
                    "rounds, interleaved, so the ratios hold; the milliseconds may still be above a quiet "
                    "machine's")
        return (f"the machine was busy while timing ({self.describe()}): contenders ran interleaved, so the "
                "ratios between them hold better than their milliseconds, but bursts of other work move them "
                "too; rerun on a quiet machine")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MachineLoad:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _num(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


@dataclass
class _Reading:
    wall: float
    busy: float | None  # every CPU's busy seconds since boot
    own: float  # this process's CPU seconds


def _read() -> _Reading:
    return _Reading(time.perf_counter(), _busy_seconds(), _own_seconds())


def _others(before: _Reading, after: _Reading) -> float | None:
    """Cores other processes kept busy on average between two readings."""
    seconds = after.wall - before.wall
    if before.busy is None or after.busy is None or seconds < WINDOW_S:  # shorter: ticks are too coarse
        return None
    return max(0.0, after.busy - before.busy - (after.own - before.own)) / seconds


class RoundMeter:
    """Other processes' share of the cores in each timed round (module docstring): `round_done()` after each
    round, `finish()` at the end."""

    def __init__(self) -> None:
        self.last = _read()
        self.pending = 0  # rounds of the open window
        self.shares: list[float | None] = []

    def round_done(self) -> None:
        self.pending += 1
        now = _read()
        if now.wall - self.last.wall >= WINDOW_S:
            self._close(now)

    def _close(self, now: _Reading) -> None:
        share = _others(self.last, now)
        self.shares += [share] * self.pending
        self.pending, self.last = 0, now

    def quiet_so_far(self) -> int:
        """Rounds not known to be disturbed (the open window's count as quiet until it closes)."""
        return sum(1 for s in self.shares if s is None or s < DISTURBED) + self.pending

    def finish(self) -> list[float]:
        """Per round: the cores other processes kept busy during it (0 where that is unknown)."""
        if self.pending:
            self._close(_read())
        return [s or 0.0 for s in self.shares]


class LoadProbe:
    """Started before a timing run, `stop()` after it: the MachineLoad of the run in between."""

    def __init__(self) -> None:
        self.load_before = load_average()
        self.before = _read()

    def stop(self, rounds: int = 0, set_aside: int = 0, disturbed_throughout: bool = False) -> MachineLoad:
        now = _read()
        others = _others(self.before, now)
        return MachineLoad(cores=os.cpu_count() or 1, seconds=round(now.wall - self.before.wall, 2),
                           load_before=self.load_before, load_after=load_average(),
                           others_cores=None if others is None else round(others, 3), rounds=rounds,
                           rounds_set_aside=set_aside, disturbed_throughout=disturbed_throughout)
