"""--calib-method auto: the activation range method chosen per model by the fidelity it measures.

Every candidate's ranges (deploykit.calib.methods.Auto) come from one collection of statistics: the histograms
entropy needs, and minmax reads the max |x| of the same pass. Each candidate's all-INT8 graph is then built as
it would ship, with its accuracy-recovery steps (bias correction where that candidate takes it; AdaRound's
codes do not depend on the activation ranges, so they are learned once), put in the backend's own numeric form
(`as_deployed`, what the accuracy-budget search scores) and scored against the FP32 model; the best is kept,
the first candidate (minmax, which never clips) on a tie.

Scored on inputs no range was fitted to (deploykit.precision.passes chooses them: the budget's held-out inputs,
else the source's inputs beyond --calib-n, else the last of the --calib-n inputs, then left out of calibration).
On its own calibration inputs minmax never clips, so it wins there whatever happens elsewhere: on the trained
MSI-Net, CC 0.9992 (minmax) against 0.9838 (entropy) on its 16 calibration images, 0.9889 against 0.9935 on
the 8 images beyond them and 0.9733 against 0.9827 on benchmarks/data/heldout (TensorRT form, no recovery).

Scored with the task's first bounded metric (pixel agreement for segmentation, CC for saliency), the output
cosine only for a model of unknown task: the task metric is what the user, the budget and the comparison with
ModelOpt judge, and the cosine of raw scores is dominated by confident outputs that never change the answer
(the same MSI-Net graphs: cosine 0.54 / 0.74 on the held-out images, where CC is 0.97 / 0.98).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from deploykit.backends.base import Backend
from deploykit.calib.methods import Method
from deploykit.calib.qdq import QdqBuilder
from deploykit.metrics.table import selected
from deploykit.precision.budget import BOUND, Evaluator
from deploykit.precision.recovery import RecoveryOptions, distill_weights, recover
from deploykit.types import Progress

SCORED_INPUTS = 2  # inputs each candidate is scored on (full size: the choice is cheap next to calibration)


def choice_metric(task: str | None) -> str:
    """The metric candidates are compared by (module docstring)."""
    bounded = selected(task=task, bounded=True, budget=True) if task is not None else ()
    return bounded[0] if bounded else "cosine"


@dataclass(frozen=True)
class MethodChoice:
    """What auto chose, and every candidate's scores, for the INT8 report."""

    chosen: Method
    metric: str
    scores: Mapping[str, Mapping[str, float]]  # candidate name -> the scores of its INT8 graph
    scored_on: str  # which inputs, e.g. "2 inputs beyond --calib-n"

    def describe(self) -> str:
        """One line: the chosen method's score against each other candidate's."""
        def shown(name: str) -> str:
            return f"{name} ({self.metric} {self.scores[name][self.metric]:.4f})"

        others = [shown(name) for name in self.scores if name != self.chosen.name]
        return f"calibration method auto: {shown(self.chosen.name)} over {', '.join(others)} on {self.scored_on}"

    def to_dict(self) -> dict[str, Any]:
        return {"asked": "auto", "chosen": self.chosen.name, "metric": self.metric,
                "scores": {name: dict(s) for name, s in self.scores.items()}, "scored_on": self.scored_on}


def _value(scores: Mapping[str, float], metric: str) -> float:
    value = scores.get(metric, float("nan"))
    return value if np.isfinite(value) else -np.inf


def choose_method(builder: QdqBuilder, ranges: Mapping[str, Mapping[str, float]], methods: Sequence[Method],
                  recovery: RecoveryOptions, entry: Backend, calibration: Iterable[np.ndarray],
                  scoring: Sequence[np.ndarray], scored_on: str, task: str | None, *, threads: int | None,
                  progress: Progress) -> tuple[MethodChoice, dict[str, Any]]:
    """Score each of `methods` (their `ranges`: name -> tensor -> amax) as the module docstring says and leave
    `builder` set up for the best (its ranges and corrected biases); the choice and the recovery records of
    the chosen candidate."""
    evaluator = Evaluator(builder.model.SerializeToString(), list(scoring), task, threads=threads,
                          disabled_optimizers=entry.scored_without)
    metric = choice_metric(task)
    scores: dict[str, dict[str, float]] = {}
    states: dict[str, tuple[dict[str, float], dict[str, np.ndarray], dict[str, Any]]] = {}
    rounded: dict[str, Any] = {}
    for number, method in enumerate(methods):
        builder.amax, builder.biases = dict(ranges[method.name]), {}
        steps = recovery.resolved(method)
        # distillation changes the float weights every candidate starts from: it runs once, on the chosen one
        steps = replace(steps, distillation=None)
        report = recover(builder, steps if number == 0 else replace(steps, rounding=None), entry, calibration,
                         threads=threads, progress=progress)
        rounded = {"adaround": report.pop("adaround")} if "adaround" in report else rounded
        deployed = entry.as_deployed(builder.build().model, threads=threads, optimize=False,
                                     float_source=builder.model)
        scored = evaluator.score(deployed.SerializeToString())
        scores[method.name] = {name: value for name, value in scored.items() if not name.endswith(BOUND)}
        states[method.name] = (builder.amax, builder.biases, report)
    best = max(methods, key=lambda m: _value(scores[m.name], metric))  # the first of equals: minmax on a tie
    builder.amax, builder.biases, report = states[best.name]
    choice = MethodChoice(best, metric, scores, scored_on)
    progress(choice.describe())
    if recovery.distillation is not None and builder.candidates():
        report["distillation"] = distill_weights(builder, entry, calibration, recovery.distillation,
                                                 threads=threads, progress=progress)
    return choice, {**rounded, **report}
