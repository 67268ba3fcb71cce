"""The one metric table, `METRICS`: every fact that depends on a metric's name lives in its entry, its
computation included: `compute(pair)` takes one batch of one output (deploykit.metrics.pair.Pair) to this
metric's part, `aggregate(parts)` the parts of every batch to its value; a metric derived from other
metrics (miou_drop, from the reference's and the candidate's miou_gt) has `derive(candidate, reference)`
instead. deploykit.metrics.scores streams them over inputs for parity and the accuracy-budget search alike.

Gates (parity), accuracy budgets (precision) and the reports ask the table; `parse_condition` is the one parser
of "[output:]METRIC OP X"; `selected` is the one selector of task metrics. The metric functions are in
deploykit.metrics.numeric (any two outputs) and deploykit.metrics.tasks (segmentation and saliency outputs).
A package adds a metric through an entry point `deploykit.metrics` (deploykit.plugins) naming a Metric; set
its `default_gate` to False unless the precision entries gate it.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deploykit.metrics import tasks
from deploykit.metrics.pair import Pair
from deploykit.plugins import with_plugins


def mean(parts: Sequence[float]) -> float:
    return float(np.mean(parts))


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
    compute: Callable[[Pair], Any] | None = None  # one batch's part (module docstring)
    aggregate: Callable[[Sequence[Any]], float] = mean  # the parts of every batch -> the value
    # derived from other metrics: (the candidate's values, the reference's own values) -> the value
    derive: Callable[[Mapping[str, float], Mapping[str, float]], float] | None = None
    unit: str = ""  # written after its value in sentences ("0.5 points"); "" for ratios and shares

    @property
    def direction(self) -> str:
        return {True: "higher is better", False: "lower is better", None: "exact"}[self.higher_is_better]


def _numeric(name: str) -> Callable[[Pair], float]:
    return lambda pair: getattr(pair.numeric, name)


def _saliency(name: str) -> Callable[[Pair], list[float]]:
    return lambda pair: pair.saliency[name]


def _drop(candidate: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """mIoU points lost against the ground truth, from the reference's miou_gt to the candidate's."""
    return 100.0 * (reference["miou_gt"] - candidate["miou_gt"])


_COUNTS, _TRUTH = operator.attrgetter("class_counts"), operator.attrgetter("truth_counts")
# Numeric metrics over several inputs of equal size: the worst input for errors and similarities (max, min),
# the sum of the non-finite counts, the mean for shares (which equals the share of all elements).
METRICS: dict[str, Metric] = with_plugins("deploykit.metrics", Metric, {
    m.name: m
    for m in (
        Metric("cosine", None, True, "cosine", 1.0, budget=True, compute=_numeric("cosine"), aggregate=min),
        Metric("max_abs", None, False, "max abs", compute=_numeric("max_abs"), aggregate=max),
        Metric("p99_abs", None, False, "p99 abs", compute=_numeric("p99_abs"), aggregate=max),
        Metric("snr_db", None, True, "SNR dB", compute=_numeric("snr_db"), aggregate=min, unit="dB"),
        Metric("mean_abs", None, False, "mean abs", column=False, compute=_numeric("mean_abs")),
        Metric("max_rel", None, False, "max rel", column=False, compute=_numeric("max_rel"), aggregate=max),
        Metric("beyond_tol", None, False, "beyond tol", column=False, compute=_numeric("beyond_tol")),
        Metric("nan", None, None, "NaN", column=False, compute=_numeric("nan"), aggregate=sum),
        Metric("inf", None, None, "Inf", column=False, compute=_numeric("inf"), aggregate=sum),
        Metric("pixel_agreement", "segmentation", True, "pixel agree", 1.0, budget=True, aliases=("agreement",),
               compute=_COUNTS, aggregate=tasks.pixel_agreement),
        Metric("miou", "segmentation", True, "mIoU", 1.0, budget=True, aliases=("mIoU",), default_gate=False,
               compute=_COUNTS, aggregate=tasks.mean_iou),
        Metric("miou_major", "segmentation", True, "mIoU >=1% classes", 1.0, budget=True,
               aliases=("mIoU_major",), compute=_COUNTS, aggregate=tasks.major_iou),
        Metric("miou_gt", "segmentation", True, "mIoU vs labels", budget=True, aliases=("mIoU_gt",),
               needs_labels=True, compute=_TRUTH, aggregate=tasks.truth_iou),
        Metric("miou_drop", "segmentation", False, "mIoU drop (points)", budget=True, aliases=("mIoU_drop",),
               needs_labels=True, derive=_drop, unit="points"),
        Metric("cc", "saliency", True, "CC", 1.0, budget=True, aliases=("CC",), compute=_saliency("cc"),
               aggregate=tasks.image_mean),
        Metric("kld", "saliency", False, "KLD", 0.0, budget=True, aliases=("KLD",), compute=_saliency("kld"),
               aggregate=tasks.image_mean),
        Metric("sim", "saliency", True, "SIM", 1.0, budget=True, aliases=("SIM",), compute=_saliency("sim"),
               aggregate=tasks.image_mean),
        Metric("nss", "saliency", True, "NSS", budget=True, aliases=("NSS",), column=False,
               compute=_saliency("nss"), aggregate=tasks.image_mean),
        Metric("nss_ratio", "saliency", True, "NSS ratio", compute=_saliency("nss_ratio"), aggregate=tasks.image_mean),
    )
})
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


def selected(*, task: str | None = None, bounded: bool = False, shown: bool = False,
             budget: bool = False) -> tuple[str, ...]:
    """The one selector of task metrics, in table order: those of `task` (None: of any task), and of them the
    `bounded` ones (perfect == 1), the `shown` ones (parity table columns) or the `budget` ones."""
    return tuple(m.name for m in METRICS.values() if m.task is not None and (task is None or m.task == task)
                 and (not bounded or m.perfect == 1.0) and (not shown or m.column) and (not budget or m.budget))


_CONDITION = re.compile(r"^\s*(?:(?P<output>[^:<>=]+):)?\s*(?P<metric>[A-Za-z0-9_]+)\s*(?P<op>>=|<=|==|>|<)\s*"
                        r"(?P<value>[-+0-9.eE]+|[-+]?inf)\s*$")


class Unreachable(ValueError):
    """A well-formed condition no value of its metric can meet (cosine>=2, a threshold of inf)."""


def _check_reachable(metric: Metric, op: str, threshold: float) -> None:
    if not math.isfinite(threshold):
        raise Unreachable(f"the threshold {threshold:g} is not a finite number; give one {metric.name} can take")
    best = metric.perfect if metric.higher_is_better else None
    if best is not None and (threshold > best or (op == ">" and threshold >= best)) and op in (">=", ">", "=="):
        raise Unreachable(f"{metric.name} is at most {best:g} (identical outputs), so {metric.name}{op}{threshold:g} "
                          f"can never hold; give a threshold up to {best:g}")
    least = metric.perfect if metric.higher_is_better is False else None  # kld >= 0: kld<=-0.1 was accepted
    if least is not None and (threshold < least or (op == "<" and threshold <= least)) and op in ("<=", "<", "=="):
        raise Unreachable(f"{metric.name} is at least {least:g} (identical outputs), so {metric.name}{op}"
                          f"{threshold:g} can never hold; give a threshold from {least:g}")


def against(value: float, threshold: float, digits: int = 4) -> str:
    """`value` to at least `digits` significant digits, more where fewer would read as the threshold it is
    compared with ("0.99496 < 0.995", never "0.995 < 0.995"), the threshold being shown as :g shows it."""
    limit = f"{threshold:g}"
    if value == float(limit):
        return limit
    for shown in range(digits, 18):
        text = f"{value:.{shown}g}"
        if not math.isfinite(value) or float(text) != float(limit):
            return text
    return repr(value)


def parse_condition(text: str, *, ops: Sequence[str] = _CONDITION_OPS, outputs: bool = True) -> Condition:
    """Parse "[output:]METRIC OP X" (OP among `ops`; an output prefix only when `outputs`). Raises ValueError
    with what is wrong, Unreachable (a ValueError) for a condition no value meets; callers turn it into their
    own message (gates, budgets)."""
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
    _check_reachable(metric, match["op"], threshold)
    output = match["output"].strip() if match["output"] else None
    return Condition(metric, match["op"], threshold, output)
