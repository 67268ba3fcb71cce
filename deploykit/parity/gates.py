"""Pass/fail gates on parity metrics, with defaults per precision (documented here, once).

A gate is `[output:]metric OP threshold` with OP one of >=, <=, >, <, ==; e.g. `pixel_agreement>=0.99` or
`logits:cosine>=0.9`. A gate applies to every output that has the metric (task metrics exist only on outputs
shaped like the task's prediction); a gate naming an output applies to that output only and wins over the
general one. A user gate replaces the default gate on the same metric (and output). A NaN value fails.

Defaults, and why:
- Every precision: nan == 0 and inf == 0 (a non-finite output is broken whatever the rest says).
- No default on max_abs / max_rel / beyond_tol: elementwise tolerances depend on the output's scale and fail
  benign FP16 runs (Polygraphy's 1e-5 defaults, NVIDIA/TensorRT#2709); they are reported, and a user can gate them.
- cosine (per output, worst input): fp32 >= 0.99999, i.e. a relative L2 error up to ~0.45%; fp32 runtimes differ
  only in summation order (~1e-6 relative). fp16 >= 0.999 (relative error up to ~4.5%: 11-bit mantissas
  accumulate to 1e-3..1e-2 through deep nets). int8 >= 0.98 (~20%: per-tensor activation scales of a
  calibrated Q/DQ model typically give 5-15%).
- Segmentation, on argmax labels: pixel_agreement fp32 >= 0.999 (only near-ties at class boundaries may flip),
  fp16 >= 0.99, int8 >= 0.95 (TensorRT's own non-determinism flips boundary pixels, NVIDIA/TensorRT#4730);
  miou_major (mIoU of candidate vs reference labels over the classes covering >= 1% of the reference's pixels,
  metrics.MAJOR_CLASS_SHARE) fp32 >= 0.99, fp16 >= 0.95, int8 >= 0.85: looser than pixel agreement because
  each class weighs alike. mIoU over all classes is reported but not gated by default: one stray pixel of a
  class the reference never predicts scores that class 0 (issue 12: pixel agreement 0.99994, mIoU 0.80), so a
  gate on it flips on one pixel; a user can still gate it with --gate miou>=X.
- Against ground truth (parity --labels): miou_gt and miou_drop (points below the FP32 reference's miou_gt)
  are reported; no default gate, since what a drop is worth is the user's call (--gate 'miou_drop<=0.5').
- Saliency: cc fp32 >= 0.9999, fp16 >= 0.999, int8 >= 0.98 (as cosine, after centring); sim fp32 >= 0.999,
  fp16 >= 0.99, int8 >= 0.95; kld fp32 <= 1e-3, fp16 <= 1e-2, int8 <= 5e-2 (nats; for small relative
  errors e, kld ~ e^2 / 2 in the mean, so these allow a few percent at int8).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from deploykit.errors import InputError
from deploykit.metrics.table import Unreachable, against, parse_condition
from deploykit.precision.table import PRECISIONS

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
}
# The thresholds above live in each precision's entry (deploykit.precision.table.PRECISIONS[p].gates).
DEFAULT_GATES: dict[str, tuple[str, ...]] = {name: entry.gates for name, entry in PRECISIONS.items()}


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float
    output: str | None = None  # None: every output that has the metric
    budget: bool = False  # a term of the accuracy budget the artifact was built to (its sidecar's)

    def describe(self) -> str:
        return f"{self.output + ':' if self.output else ''}{self.metric}{self.op}{self.threshold:g}"

    def check(self, value: float) -> bool:
        return not math.isnan(value) and OPERATORS[self.op](value, self.threshold)


@dataclass(frozen=True)
class GateCheck:
    gate: Gate
    value: float
    passed: bool

    def describe(self) -> str:
        shown = against(self.value, self.gate.threshold)  # the tables' and the verdict's digits (report.format.fmt)
        verdict = "ok" if self.passed else ("misses the budget" if self.gate.budget else "fails")
        return f"{self.gate.metric} {shown} {verdict} {self.gate.op}{self.gate.threshold:g}"


def parse_gate(text: str) -> Gate:
    try:
        found = parse_condition(text, ops=tuple(OPERATORS))
    except ValueError as exc:
        if "unknown metric" in str(exc) or isinstance(exc, Unreachable):
            raise InputError(f"gate {text!r}: {exc}") from None
        raise InputError(f"gate {text!r} is not [output:]metric OP number ({exc}); write e.g. "
                         "'pixel_agreement>=0.99' or 'logits:cosine>=0.999' (OP is one of >=, <=, >, <, ==)") from None
    return Gate(metric=found.metric.name, op=found.op, threshold=found.threshold, output=found.output)


def budget_gates(budget: str | None) -> list[Gate]:
    """The terms of an accuracy budget ("pixel_agreement>=0.99", comma-separated terms) as gates: an artifact
    built to a budget is held to it on the parity inputs, where the user looks (issue 20)."""
    if not budget:
        return []
    return [replace(parse_gate(term.strip()), budget=True) for term in budget.split(" and ") for term in
            term.split(",") if term.strip()]


def gates_for(precision: str, overrides: Sequence[Gate] = (), budget: str | None = None) -> list[Gate]:
    """The default gates of `precision`, then the artifact's accuracy budget (on the same metric the stricter
    one counts), with the user's gates replacing those on the same metric and output."""
    if precision not in DEFAULT_GATES:
        raise InputError(f"no default gates for precision {precision!r}; pass --precision "
                         f"{'|'.join(PRECISIONS)} to choose them")
    replaced = {(g.metric, g.output) for g in overrides}
    chosen: dict[tuple[str, str | None], Gate] = {}
    for gate in [parse_gate(text) for text in DEFAULT_GATES[precision]] + budget_gates(budget):
        key = (gate.metric, gate.output)
        if key not in replaced and (key not in chosen or _stricter(gate, chosen[key])):
            chosen[key] = gate
    return list(chosen.values()) + list(overrides)


def _stricter(gate: Gate, other: Gate) -> bool:
    if gate.op != other.op or gate.op not in (">=", "<=", ">", "<"):
        return gate.budget
    return gate.threshold > other.threshold if gate.op in (">=", ">") else gate.threshold < other.threshold


def evaluate(gates: Sequence[Gate], output: str, metrics: Mapping[str, float]) -> list[GateCheck]:
    """Checks for one output: per metric the output's own gate if any, else the general one."""
    chosen: dict[str, Gate] = {}
    for gate in gates:
        if gate.output not in (None, output) or gate.metric not in metrics:
            continue
        if gate.metric not in chosen or gate.output is not None:
            chosen[gate.metric] = gate
    return [GateCheck(g, float(metrics[g.metric]), g.check(float(metrics[g.metric]))) for g in chosen.values()]


def check_gate_outputs(gates: Sequence[Gate], outputs: Sequence[str]) -> None:
    """Fail clearly on a gate naming an output the model does not have."""
    for gate in gates:
        if gate.output is not None and gate.output not in outputs:
            raise InputError(f"gate {gate.describe()!r} names output {gate.output!r}; the outputs are "
                             f"{', '.join(outputs)}")
