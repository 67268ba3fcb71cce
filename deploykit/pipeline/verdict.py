"""The deploy verdict (issue 13, item 1): which artifact to ship and why the others were not chosen.

The artifact to ship is the fastest (median latency at batch 1 in this run's benchmark) of those that pass every
parity gate, except that passing artifacts tied with the fastest are equally fast and the one of highest
precision among them is shipped. Two artifacts are tied when the 95% bootstrap interval of the ratio of their
medians contains 1 (deploy times every artifact in one round-robin run, so the interval is taken over rounds:
deploykit.bench.stats.median_ratio); a fixed margin could not tell a real gap from a noisy one (FP16 and FP32
artifacts compute alike under ONNX Runtime's CPU provider, yet timed 307 against 300 ms on a loaded machine).
Each other artifact gets a one-line reason: the gates it failed, or that a passing artifact is faster (or as
fast and more precise). Speed-ups are PyTorch eager's (and the FP32 artifact's) median divided by the shipped
artifact's, each with its interval. The same Verdict is the top of report.md / report.html, the summary `deploy`
prints, and summary.json's "verdict".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploykit.backends.base import REFERENCE
from deploykit.bench.harness import BenchResult, speedup
from deploykit.bench.run import BenchReport
from deploykit.bench.stats import Ratio
from deploykit.build import BuildResult
from deploykit.metrics.table import against, selected
from deploykit.parity.compare import CandidateResult, ParityResult
from deploykit.precision.table import BASELINE, PRECISIONS, lowered_nodes
from deploykit.report.format import fmt, metrics_text

# The task metrics the verdict quotes: those shown in the parity tables and usable as budgets.
TASK_KEYS = selected(shown=True, budget=True)


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
    latency_spread_ms: tuple[float, float] | None = None  # p10, p90 of the shipped artifact's samples
    speedup_vs_torch: Ratio | None = None  # with its 95% bootstrap interval
    speedup_vs_fp32: Ratio | None = None
    task_metrics: dict[str, float] = field(default_factory=dict)
    rejected: tuple[Rejected, ...] = ()
    caveat: str = ""  # what the shipped precision's name does not say (an INT8 artifact with no INT8 node)
    machine: str = ""  # the CPU the milliseconds were timed on (BenchReport.machine): a latency means nothing alone

    def lines(self) -> list[str]:
        """The verdict for people: the first line answers "what do I ship", one line per other artifact."""
        if self.ship is None:
            head = "verdict: nothing to ship: no artifact passes every parity gate"
        else:
            speed = ", ".join(part for part in (_times(self.speedup_vs_torch, "PyTorch eager"),
                                                _times(self.speedup_vs_fp32 if self.precision != BASELINE.name
                                                       else None, "FP32")) if part)
            metrics = metrics_text(self.task_metrics, "PyTorch")
            spread = (f" (p10-p90 {fmt(self.latency_spread_ms[0])}-{fmt(self.latency_spread_ms[1])})"
                      if self.latency_spread_ms else "")
            precision = f"{self.precision}, {self.caveat}" if self.caveat else self.precision
            machine = f" on {self.machine}" if self.machine and self.latency_ms is not None else ""
            head = (f"verdict: ship {self.ship} ({precision}): {fmt(self.latency_ms)} ms median{spread} at "
                    f"batch 1{machine}" + (f", {speed}" if speed else "") + (f"; {metrics}" if metrics else ""))
        return [head, *(f"  not {r.artifact} ({r.precision}): {r.reason}" for r in self.rejected)]

    def unmet(self, require: str | None) -> str:
        """Why an artifact is shipped that is not the one deploy --require asked for ("" when it is, when nothing
        is required or nothing is shipped): not of that precision, or of it in name only (the caveat)."""
        if require is None or self.ship is None:
            return ""
        if self.precision != require:
            why = next((f"; {r.artifact}: {r.reason}" for r in self.rejected if r.precision == require), "")
            return f"--require {require}: the verdict ships {self.ship} ({self.precision}){why}"
        return f"--require {require}: the verdict ships {self.ship}, {self.caveat}" if self.caveat else ""

    def to_dict(self) -> dict[str, Any]:
        """Speed-ups as numbers (what scripts compare) with their intervals beside them."""
        def interval(ratio: Ratio | None) -> list[float] | None:
            return [ratio.low, ratio.high] if ratio and ratio.low is not None and ratio.high is not None else None
        return {"ship": self.ship, "precision": self.precision, "latency_ms": self.latency_ms,
                "latency_p10_p90_ms": list(self.latency_spread_ms) if self.latency_spread_ms else None,
                "speedup_vs_torch": self.speedup_vs_torch.value if self.speedup_vs_torch else None,
                "speedup_vs_torch_interval": interval(self.speedup_vs_torch),
                "speedup_vs_fp32": self.speedup_vs_fp32.value if self.speedup_vs_fp32 else None,
                "speedup_vs_fp32_interval": interval(self.speedup_vs_fp32),
                "interval": "95% bootstrap interval of the ratio of medians, resampled by round",
                "task_metrics": self.task_metrics, "rejected": [vars(r).copy() for r in self.rejected],
                "caveat": self.caveat, "machine": self.machine, "text": self.lines()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        spread = data.get("latency_p10_p90_ms")
        return cls(ship=data.get("ship"), precision=data.get("precision"), latency_ms=data.get("latency_ms"),
                   latency_spread_ms=(float(spread[0]), float(spread[1])) if spread else None,
                   speedup_vs_torch=_ratio(data, "speedup_vs_torch"), speedup_vs_fp32=_ratio(data, "speedup_vs_fp32"),
                   task_metrics={k: float(v) for k, v in (data.get("task_metrics") or {}).items()},
                   rejected=tuple(Rejected(**r) for r in data.get("rejected", [])), caveat=str(data.get("caveat", "")),
                   machine=str(data.get("machine", "")))


def _ratio(data: Mapping[str, Any], key: str) -> Ratio | None:
    value, interval = data.get(key), data.get(f"{key}_interval")
    if value is None:
        return None
    if not interval:  # none recorded (one round): none made up
        return Ratio(float(value), None, None, paired=False)
    return Ratio(float(value), float(interval[0]), float(interval[1]), paired=True)


def _times(ratio: Ratio | None, over: str) -> str:
    return f"{ratio.text()} over {over}" if ratio is not None else ""


def artifact_run(results: Sequence[BenchResult], precision: str) -> BenchResult | None:
    """The run at batch 1 (else the smallest batch) of the non-PyTorch artifact of `precision`."""
    runs = sorted((r for r in results if r.precision == precision and r.backend != REFERENCE.name),
                  key=lambda r: r.batch)
    return runs[0] if runs else None


def per_image_ms(result: BenchResult) -> float:
    return result.latency.median / result.batch


def _smallest_batch(results: Sequence[BenchResult]) -> float | None:
    runs = sorted(results, key=lambda r: r.batch)
    return per_image_ms(runs[0]) if runs else None


def artifact_latency(results: Sequence[BenchResult], precision: str) -> float | None:
    """Median ms per image at batch 1 (else the smallest batch) of the non-PyTorch run of `precision`."""
    run = artifact_run(results, precision)
    return run.latency.median / run.batch if run else None


def reference_run(results: Sequence[BenchResult]) -> BenchResult | None:
    """PyTorch eager's run at the smallest batch."""
    return next((r for r in sorted(results, key=lambda r: r.batch) if r.backend == REFERENCE.name), None)


def _failures(candidate: CandidateResult, inputs: int) -> str:
    """Why a candidate fails: its accuracy budget first, as it missed it on the parity inputs (the search
    held it on its held-out share), then the gates it fails."""
    budget = [f"budget missed: {c.gate.metric} {against(c.value, c.gate.threshold)} {_MISSED[c.gate.op]} "
              f"{c.gate.threshold:g} on {inputs} input{'s' if inputs != 1 else ''}"
              for o in candidate.outputs for c in o.checks if c.gate.budget and not c.passed]
    failed = [f"{o.name} {c.describe()}" for o in candidate.outputs for c in o.checks
              if not c.passed and not c.gate.budget]
    parts = budget + (["fails parity: " + "; ".join(failed[:3]) + (f" (+{len(failed) - 3} more)"
                                                                    if len(failed) > 3 else "")] if failed else [])
    return "; ".join(parts)


_MISSED = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!="}  # how a missed budget term reads


def _rank(precision: str) -> int:
    """Position in the precision table, highest precision (fp32) first."""
    order = list(PRECISIONS)
    return order.index(precision) if precision in order else len(order)


def decide(builds: Sequence[BuildResult], parity: ParityResult, bench: BenchReport) -> Verdict:
    """The verdict of one deploy (module docstring); builds and parity candidates are in the same order."""
    runs = {b.precision: artifact_run(bench.results, b.precision) for b in builds}
    pairs = list(zip(builds, parity.candidates, strict=True))
    passing = [(b, c) for b, c in pairs if c.passed]
    timed = sorted(((b, c) for b, c in passing if runs[b.precision] is not None),
                   key=lambda bc: _per_image(runs[bc[0].precision]))
    fastest = runs[timed[0][0].precision] if timed else None
    tied = [bc for bc in timed if fastest is not None and _tied(runs[bc[0].precision], fastest)]
    chosen = min(tied, key=lambda bc: _rank(bc[0].precision)) if tied else (passing[0] if passing else None)
    rejected = []
    for build, candidate in pairs:
        if chosen is not None and build is chosen[0]:
            continue
        reason = (_failures(candidate, parity.input_count) if not candidate.passed
                  else _slower(runs[build.precision], fastest, chosen[0] if chosen else None, runs))
        rejected.append(Rejected(build.path.name, build.precision, reason))
    if chosen is None:
        return Verdict(ship=None, rejected=tuple(rejected))
    build, candidate = chosen
    mine = runs[build.precision]
    torch, fp32 = reference_run(bench.results), runs.get(BASELINE.name) or artifact_run(bench.results, BASELINE.name)
    metrics = candidate.outputs[0].metrics if candidate.outputs else {}
    return Verdict(ship=build.path.name, precision=build.precision,
                   latency_ms=_per_image(mine) if mine else None,
                   latency_spread_ms=_spread(mine) if mine else None,
                   speedup_vs_torch=speedup(torch, mine) if torch and mine else None,
                   speedup_vs_fp32=speedup(fp32, mine) if fp32 and mine else None,
                   task_metrics={k: metrics[k] for k in TASK_KEYS if k in metrics}, rejected=tuple(rejected),
                   caveat=_in_name_only(build), machine=bench.machine())


def _in_name_only(build: BuildResult) -> str:
    """Said when the precision pass moved no node to the artifact's precision (an accuracy budget that kept every
    quantizable node in float): its file name says int8, yet it computes as FP32 does."""
    if lowered_nodes(build.precision, build.report) != 0:
        return ""
    kept = len(build.kept)
    return f"in name only: no node runs in {PRECISIONS[build.precision].title}" + (
        f", all {kept} it could move were kept in float" if kept else "")


def _per_image(run: BenchResult | None) -> float:
    return run.latency.median / run.batch if run else float("inf")


def _spread(run: BenchResult) -> tuple[float, float]:
    low = run.latency.p10 if run.latency.p10 is not None else run.latency.min
    return low / run.batch, run.latency.p90 / run.batch


def _tied(run: BenchResult | None, fastest: BenchResult) -> bool:
    return run is fastest or (run is not None and speedup(run, fastest).tied)


def _slower(mine: BenchResult | None, fastest: BenchResult | None, chosen: BuildResult | None,
            runs: Mapping[str, BenchResult | None]) -> str:
    """Why a passing artifact was not shipped: tied with the fastest but of lower precision (its time against the
    shipped one's), or slower than the fastest."""
    shipped = runs.get(chosen.precision) if chosen else None
    if mine is None or fastest is None or chosen is None or shipped is None:
        return "passes, but was not timed"
    if _tied(mine, fastest):
        ratio = speedup(mine, shipped)  # its time over the shipped artifact's
        return (f"passes, as fast within this run's noise ({fmt(_per_image(mine))} ms against "
                f"{fmt(_per_image(shipped))} ms, {ratio.text()} as long: tied with the fastest); "
                f"{chosen.precision} is the higher precision")
    ratio = speedup(mine, fastest)
    versus = "" if shipped is fastest else f" for the fastest, {fastest.precision}"
    return f"passes, but slower ({fmt(_per_image(mine))} ms against {fmt(_per_image(fastest))} ms{versus}, " \
           f"{ratio.text()} as long)"
