"""The one metric table, `METRICS`: every fact that depends on a metric's name lives in its entry.

Gates (parity), accuracy budgets (precision) and the reports ask it; `parse_condition` is the one parser of
"[output:]METRIC OP X". The metrics themselves are defined in deploykit.metrics.numeric (any two outputs) and
deploykit.metrics.tasks (segmentation and saliency outputs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    task: str | None  # the task whose outputs have it; None: every output (numeric metrics)
    higher_is_better: bool | None  # None: a count or an error whose gate is ==
    title: str  # how tables name it
    perfect: float | None = None  # the value of identical outputs, where the metric is bounded by it
    budget: bool = False  # usable in --accuracy-budget
    aliases: tuple[str, ...] = ()  # other spellings accepted in budgets and gates (mIoU, CC, ...)
    column: bool = True  # a column of the parity tables (deploykit.report.parity), in table order
    needs_labels: bool = False  # measured against ground-truth masks (parity --labels), not the reference
    default_gate: bool = True  # a bounded task metric every precision gates (False: reported only, see gates.py)

    @property
    def direction(self) -> str:
        return {True: "higher is better", False: "lower is better", None: "exact"}[self.higher_is_better]


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("cosine", None, True, "cosine", 1.0, budget=True),
        Metric("max_abs", None, False, "max abs"),
        Metric("p99_abs", None, False, "p99 abs"),
        Metric("snr_db", None, True, "SNR dB"),
        Metric("mean_abs", None, False, "mean abs", column=False),
        Metric("max_rel", None, False, "max rel", column=False),
        Metric("beyond_tol", None, False, "beyond tol", column=False),
        Metric("nan", None, None, "NaN", column=False),
        Metric("inf", None, None, "Inf", column=False),
        Metric("pixel_agreement", "segmentation", True, "pixel agree", 1.0, budget=True, aliases=("agreement",)),
        Metric("miou", "segmentation", True, "mIoU", 1.0, budget=True, aliases=("mIoU",), default_gate=False),
        Metric("miou_major", "segmentation", True, "mIoU >=1% classes", 1.0, budget=True,
               aliases=("mIoU_major",)),
        Metric("miou_gt", "segmentation", True, "mIoU vs labels", budget=True, aliases=("mIoU_gt",),
               needs_labels=True),
        Metric("miou_drop", "segmentation", False, "mIoU drop (points)", budget=True, aliases=("mIoU_drop",),
               needs_labels=True),
        Metric("cc", "saliency", True, "CC", 1.0, budget=True, aliases=("CC",)),
        Metric("kld", "saliency", False, "KLD", budget=True, aliases=("KLD",)),
        Metric("sim", "saliency", True, "SIM", 1.0, budget=True, aliases=("SIM",)),
        Metric("nss", "saliency", True, "NSS", budget=True, aliases=("NSS",), column=False),
        Metric("nss_ratio", "saliency", True, "NSS ratio"),
    )
}
_ALIASES = {alias: m.name for m in METRICS.values() for alias in m.aliases}
_CONDITION_OPS = (">=", "<=", "==", ">", "<")


@dataclass(frozen=True)
class Condition:
    """One parsed "[output:]METRIC OP X"."""

    metric: Metric
    op: str
    threshold: float
    output: str | None = None


def metric_named(name: str) -> Metric | None:
    """The entry for `name` or one of its aliases (case-insensitive), else None."""
    return METRICS.get(name) or METRICS.get(_ALIASES.get(name, name.lower())) or METRICS.get(
        _ALIASES.get(name.lower(), ""))


def task_metric_names(task: str | None) -> tuple[str, ...]:
    """The metrics of `task`'s outputs, in table order (none for an unknown task)."""
    return tuple(m.name for m in METRICS.values() if m.task is not None and m.task == task)


_CONDITION = re.compile(r"^\s*(?:(?P<output>[^:<>=]+):)?\s*(?P<metric>[A-Za-z0-9_]+)\s*(?P<op>>=|<=|==|>|<)\s*"
                        r"(?P<value>[-+0-9.eE]+|[-+]?inf)\s*$")


def parse_condition(text: str, *, ops: Sequence[str] = _CONDITION_OPS, outputs: bool = True) -> Condition:
    """Parse "[output:]METRIC OP X" (OP among `ops`; an output prefix only when `outputs`). Raises ValueError
    with what is wrong; callers turn it into their own message (gates, budgets)."""
    match = _CONDITION.match(text)
    if match is None or match["op"] not in ops or (match["output"] and not outputs):
        raise ValueError(f"not {'[output:]' if outputs else ''}METRIC OP NUMBER with OP one of {', '.join(ops)}")
    metric = metric_named(match["metric"])
    if metric is None:
        raise ValueError(f"unknown metric {match['metric']!r}; known: {', '.join(METRICS)}")
    try:
        threshold = float(match["value"])
    except ValueError:
        raise ValueError(f"{match['value']!r} is not a number") from None
    output = match["output"].strip() if match["output"] else None
    return Condition(metric, match["op"], threshold, output)
