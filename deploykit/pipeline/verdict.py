"""The deploy verdict (issue 13, item 1): which artifact to ship and why the others were not chosen.

The artifact to ship is the fastest (median latency at batch 1 in this run's benchmark) of those that pass every
parity gate, except that passing artifacts within TIE (5%) of the fastest count as equally fast and the one of
highest precision among them is shipped: medians of runs with the same numerics differ by that much on a loaded
CPU (FP16 and FP32 artifacts compute alike under ONNX Runtime's CPU provider, and measured 0.4759 against
0.4766 ms on the tiny MSI-Net, 307 against 300 ms on the demo DeepLabv3+). Each other artifact gets a one-line
reason: the gates it failed, or that a passing artifact is faster (or as fast and more precise).
Speed-ups are PyTorch eager's (and the FP32 artifact's) median per image divided by the artifact's (`speedup`, the
one rule the report's latency table uses too), each at its smallest batch timed. The same
Verdict is the top of report.md / report.html, the last lines `deploy` prints, and summary.json's "verdict".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploykit.backends.base import REFERENCE
from deploykit.bench.harness import BenchResult
from deploykit.bench.run import BenchReport
from deploykit.build import BuildResult
from deploykit.metrics.table import selected
from deploykit.parity.compare import CandidateResult, ParityResult
from deploykit.precision.table import BASELINE, PRECISIONS

# The task metrics the verdict quotes: those shown in the parity tables and usable as budgets.
TASK_KEYS = selected(shown=True, budget=True)
TIE = 0.05


@dataclass(frozen=True)
class Rejected:
    artifact: str  # file name in the deploy folder
    precision: str
    reason: str  # one line


@dataclass(frozen=True)
class Verdict:
    ship: str | None  # artifact file name; None when nothing passes
    precision: str | None = None
    latency_ms: float | None = None
    speedup_vs_torch: float | None = None
    speedup_vs_fp32: float | None = None
    task_metrics: dict[str, float] = field(default_factory=dict)
    rejected: tuple[Rejected, ...] = ()

    def lines(self) -> list[str]:
        """The verdict for people: the first line answers "what do I ship", one line per other artifact."""
        if self.ship is None:
            head = "verdict: nothing to ship: no artifact passes every parity gate"
        else:
            speed = ", ".join(part for part in (_times(self.speedup_vs_torch, "PyTorch eager"),
                                                _times(self.speedup_vs_fp32 if self.precision != BASELINE.name
                                                       else None, "FP32")) if part)
            metrics = ", ".join(f"{k} {_num(v)}" for k, v in self.task_metrics.items())
            head = (f"verdict: ship {self.ship} ({self.precision}): {_num(self.latency_ms)} ms median at batch 1"
                    + (f", {speed}" if speed else "") + (f"; {metrics} against PyTorch" if metrics else ""))
        return [head, *(f"  not {r.artifact} ({r.precision}): {r.reason}" for r in self.rejected)]

    def to_dict(self) -> dict[str, Any]:
        return {"ship": self.ship, "precision": self.precision, "latency_ms": self.latency_ms,
                "speedup_vs_torch": self.speedup_vs_torch, "speedup_vs_fp32": self.speedup_vs_fp32,
                "task_metrics": self.task_metrics, "rejected": [vars(r).copy() for r in self.rejected],
                "text": self.lines()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        return cls(ship=data.get("ship"), precision=data.get("precision"), latency_ms=data.get("latency_ms"),
                   speedup_vs_torch=data.get("speedup_vs_torch"), speedup_vs_fp32=data.get("speedup_vs_fp32"),
                   task_metrics={k: float(v) for k, v in (data.get("task_metrics") or {}).items()},
                   rejected=tuple(Rejected(**r) for r in data.get("rejected", [])))


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _times(ratio: float | None, over: str) -> str:
    return f"{ratio:.2f}x over {over}" if ratio is not None else ""


def per_image_ms(result: BenchResult) -> float:
    return result.latency.median / result.batch


def _smallest_batch(results: Sequence[BenchResult]) -> float | None:
    runs = sorted(results, key=lambda r: r.batch)
    return per_image_ms(runs[0]) if runs else None


def artifact_latency(results: Sequence[BenchResult], precision: str) -> float | None:
    """Median ms at batch 1 (else the smallest batch, per image) of the non-PyTorch run of `precision`."""
    return _smallest_batch([r for r in results if r.precision == precision and r.backend != REFERENCE.name])


def reference_latency(results: Sequence[BenchResult]) -> float | None:
    """PyTorch eager's median ms per image at its smallest batch."""
    return _smallest_batch([r for r in results if r.backend == REFERENCE.name])


def speedup(ms: float | None, over: float | None) -> float | None:
    """How many times faster `ms` is than `over` (both per image): the one rule of every speed-up."""
    return over / ms if over and ms else None


def _failures(candidate: CandidateResult) -> str:
    failed = [f for o in candidate.outputs for f in o.failures()]
    return "fails parity: " + "; ".join(failed[:3]) + (f" (+{len(failed) - 3} more)" if len(failed) > 3 else "")


def _rank(precision: str) -> int:
    """Position in the precision table, highest precision (fp32) first."""
    order = list(PRECISIONS)
    return order.index(precision) if precision in order else len(order)


def decide(builds: Sequence[BuildResult], parity: ParityResult, bench: BenchReport) -> Verdict:
    """The verdict of one deploy (module docstring); builds and parity candidates are in the same order."""
    latency = {b.precision: artifact_latency(bench.results, b.precision) for b in builds}
    pairs = list(zip(builds, parity.candidates, strict=True))
    passing = [(b, c) for b, c in pairs if c.passed]
    timed = sorted(passing, key=lambda bc: (latency[bc[0].precision] is None, latency[bc[0].precision] or 0.0))
    chosen = timed[0] if timed else None
    fastest = latency[chosen[0].precision] if chosen else None
    if fastest is not None:
        tied = [bc for bc in timed if (ms := latency[bc[0].precision]) is not None and ms <= fastest * (1 + TIE)]
        chosen = min(tied, key=lambda bc: _rank(bc[0].precision))
    rejected = []
    for build, candidate in pairs:
        if chosen is not None and build is chosen[0]:
            continue
        if not candidate.passed:
            reason = _failures(candidate)
        else:
            mine, best = latency[build.precision], latency[chosen[0].precision] if chosen else None
            if mine and best and mine <= (fastest or best) * (1 + TIE):
                reason = (f"passes, as fast within {TIE:.0%} ({_num(mine)} ms against {_num(best)} ms); "
                          f"{chosen[0].precision if chosen else '-'} is the higher precision")
            else:
                reason = (f"passes, but slower ({_num(mine)} ms against {_num(best)} ms)" if mine and best
                          else "passes, but was not timed")
        rejected.append(Rejected(build.path.name, build.precision, reason))
    if chosen is None:
        return Verdict(ship=None, rejected=tuple(rejected))
    build, candidate = chosen
    mine = latency[build.precision]
    fp32 = latency.get(BASELINE.name) or artifact_latency(bench.results, BASELINE.name)
    metrics = candidate.outputs[0].metrics if candidate.outputs else {}
    return Verdict(ship=build.path.name, precision=build.precision, latency_ms=mine,
                   speedup_vs_torch=speedup(mine, reference_latency(bench.results)),
                   speedup_vs_fp32=speedup(mine, fp32),
                   task_metrics={k: metrics[k] for k in TASK_KEYS if k in metrics}, rejected=tuple(rejected))
