"""What else the machine did while deploykit timed: the 1-minute load average before and after, and the CPU
time other processes took meanwhile.

The load average counts deploykit's own threads too (a deploy that just exported and calibrated a model
leaves it near the core count on a quiet machine), so the warning rests on the other processes' share:
the busy time of every CPU (/proc/stat: user, nice, system, irq, softirq and steal, which is another
virtual machine's use of the same cores) minus this process's own CPU time, over the timed seconds. Where
/proc/stat is missing, the load average alone decides.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

BUSY_SHARE = 0.25  # other processes keeping a quarter of a core busy on average distort CPU timings visibly
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

    @property
    def busy(self) -> bool:
        if self.others_cores is not None:
            return self.others_cores >= BUSY_SHARE
        return max(self.load_before or 0.0, self.load_after or 0.0) >= self.cores / 2

    def describe(self) -> str:
        """One clause: '1-minute load average 0.4 before, 2.1 after; other processes 0.05 of 2 cores'."""
        shown = [f"1-minute load average {_num(self.load_before)} before, {_num(self.load_after)} after"]
        if self.others_cores is not None:
            shown.append(f"other processes kept {self.others_cores:.2f} of {self.cores} cores busy")
        return "; ".join(shown)

    def warning(self) -> str | None:
        """The report's warning when other work shared the CPU during timing (None on a quiet machine)."""
        if not self.busy:
            return None
        return (f"the machine was busy while timing ({self.describe()}): contenders ran interleaved, so the "
                "ratios between them hold better than their milliseconds; rerun on a quiet machine for "
                "absolute latencies")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MachineLoad:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _num(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


class LoadProbe:
    """Started before a timing run, `stop()` after it: the MachineLoad of the run in between."""

    def __init__(self) -> None:
        self.load_before = load_average()
        self.started = time.perf_counter()
        self.busy_before = _busy_seconds()
        self.own_before = _own_seconds()

    def stop(self) -> MachineLoad:
        seconds = time.perf_counter() - self.started
        busy_after = _busy_seconds()
        others = None
        if self.busy_before is not None and busy_after is not None and seconds > 0:
            own = _own_seconds() - self.own_before
            others = round(max(0.0, busy_after - self.busy_before - own) / seconds, 3)
        return MachineLoad(cores=os.cpu_count() or 1, seconds=round(seconds, 2), load_before=self.load_before,
                           load_after=load_average(), others_cores=others)
