"""The speed/accuracy frontier of a deploy (issue 13, item 4): latency against the task metric for every artifact
and every plan the accuracy-budget search evaluated (precision.budget.BudgetResult.trace).

Artifacts are scored by the parity run (the parity inputs) and timed by the benchmark. Plans are scored by the
search on its held-out calibration inputs, so their metric is not on the same inputs as the artifacts'; a plan's
latency is measured only when it is the artifact that was built. For the others it is estimated by linear
interpolation in the share of multiply-adds run in low precision (the trace's "low_macs_share"): FP32's measured
latency at share 0 and the built artifact's at its own share. That assumes each multiply-add moved to low
precision saves the same time, which ignores the Q/DQ and layout work around each quantized node: a rough guide,
marked as estimated wherever it is shown. It is not extrapolated beyond MAX_EXTRAPOLATION times the built plan's
share: on the tiny test model the built plan ran 0.17% of its multiply-adds in INT8 at +3.5 ms over FP32, and a
straight line through that gives the all-INT8 plan half a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deploykit.metrics.table import selected
from deploykit.pipeline.verdict import artifact_latency
from deploykit.precision.table import BASELINE

if TYPE_CHECKING:
    from deploykit.pipeline.results import DeployResult

MAX_EXTRAPOLATION = 2.0
TASK_KEYS = selected()


@dataclass(frozen=True)
class Point:
    label: str
    kind: str  # "artifact", "plan" or "chosen" (the plan the build kept)
    metric: float
    latency_ms: float | None
    estimated: bool  # latency interpolated from the multiply-add share (module docstring)
    kept: int | None = None  # nodes kept in higher precision (plans)


@dataclass(frozen=True)
class Frontier:
    metric: str
    points: tuple[Point, ...]
    built_shares: dict[str, float]  # precision -> share of multiply-adds the built plan runs in low precision


def _metric(result: DeployResult) -> str | None:
    """The budget's metric when it is a task metric, else the first task metric parity measured."""
    for build in result.builds:
        for entry in (build.report.get("budget") or {}).get("trace") or []:
            budgeted = [key for key in entry if key in TASK_KEYS]  # the budget's terms sit at the top level
            if budgeted:
                return budgeted[0]
    measured = result.parity.candidates[0].outputs[0].metrics if result.parity.candidates else {}
    return next((k for k in TASK_KEYS if k in measured), "cosine" if "cosine" in measured else None)


def _plans(result: DeployResult, metric: str, fp32_ms: float | None, shares: dict[str, float]) -> list[Point]:
    points = []
    for build in result.builds:
        budget: dict[str, Any] = build.report.get("budget") or {}
        trace = [t for t in budget.get("trace") or [] if metric in (t.get("scores") or {})]
        if not trace:
            continue
        built_ms = artifact_latency(result.bench.results, build.precision)
        chosen = next((t for t in trace if t.get("nodes") == budget.get("kept")), None)  # first, as seen
        share = chosen.get("low_macs_share") if chosen else None
        if share is not None:
            shares[build.precision] = float(share)
        seen: set[tuple[str, ...]] = set()
        for entry in trace:
            nodes = tuple(entry.get("nodes") or ())
            if nodes in seen:
                continue
            seen.add(nodes)
            mine = entry.get("low_macs_share")
            if entry is chosen:
                latency, estimated = built_ms, False
            elif None not in (fp32_ms, built_ms, mine, share) and share and mine <= MAX_EXTRAPOLATION * share:
                latency = fp32_ms + (built_ms - fp32_ms) * mine / share  # type: ignore[operator]
                estimated = True
            else:
                latency, estimated = None, False
            points.append(Point(f"{build.precision}, {len(nodes)} kept", "chosen" if entry is chosen else "plan",
                                float(entry["scores"][metric]), latency, estimated, len(nodes)))
    return sorted(points, key=lambda p: (p.label.split(",")[0], p.kept or 0))


def frontier(result: DeployResult) -> Frontier | None:
    """Every artifact and evaluated plan with its task metric and latency (module docstring); None when parity
    measured no metric, or for a single point: no trade-off to show (the report had no section for it, but
    frontier.png was drawn beside it)."""
    metric = _metric(result)
    if metric is None:
        return None
    fp32_ms = artifact_latency(result.bench.results, BASELINE.name)
    points = [Point(f"{b.precision} artifact", "artifact", float(c.outputs[0].metrics[metric]),
                    artifact_latency(result.bench.results, b.precision), False)
              for b, c in zip(result.builds, result.parity.candidates, strict=True)
              if c.outputs and metric in c.outputs[0].metrics]
    shares: dict[str, float] = {}
    plans = _plans(result, metric, fp32_ms, shares)
    return Frontier(metric, (*points, *plans), shares) if len(points) + len(plans) > 1 else None
