"""Metrics streamed over inputs: `Scores` gathers every metric of the table that applies to one output, one
batch at a time, and gives their values at the end; parity (every output of every candidate) and the
accuracy-budget search (the task metrics of held-out inputs) both use it, so each metric is computed in one
place, its entry (deploykit.metrics.table).

Which metrics apply: the numeric ones (task None) to every output but a class map; those of the output's task
to outputs shaped like its prediction (a class map is a prediction of the labelled task); those that need
ground truth only when masks are given; derived ones (miou_drop) when the reference's own values are given.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from deploykit.errors import ParityError
from deploykit.metrics.pair import Pair, Shared
from deploykit.metrics.table import METRICS, Metric
from deploykit.metrics.tasks import task_of
from deploykit.types import LABELLED, TaskEntry


class Scores:
    def __init__(self, task: TaskEntry | None, *, class_map: bool = False, numeric: bool = True,
                 truth: bool = False, names: Collection[str] | None = None, atol: float = 1e-4,
                 rtol: float = 1e-3) -> None:
        """`task`: the task the output is a prediction of (None: not a task output); `class_map`: the output is
        an --head argmax label map; `numeric`: include the numeric metrics; `truth`: masks come with each
        batch; `names`: only these metrics."""
        self.task = LABELLED if class_map else task
        self.atol, self.rtol = atol, rtol
        self.metrics: list[Metric] = [
            m for m in METRICS.values()
            if ((m.task is None and numeric and not class_map)
                or (self.task is not None and m.task == self.task.name and (truth or not m.needs_labels)))
            and (names is None or m.name in names)]
        self.parts: dict[str, list[Any]] = {m.name: [] for m in self.metrics if m.compute is not None}
        self.batches = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, truth: np.ndarray | None = None,
            shared: Shared | None = None) -> Pair:
        """One batch; `shared`: see Pair."""
        pair = Pair(reference, candidate, self.task, truth=truth, atol=self.atol, rtol=self.rtol, shared=shared)
        self.batches += 1
        for metric in self.metrics:
            if metric.compute is not None:
                self.parts[metric.name].append(metric.compute(pair))
        return pair

    def result(self, reference: Mapping[str, float] | None = None) -> dict[str, float]:
        """Every metric's value; derived ones only with the `reference`'s own values (Scores of reference vs
        reference with the same masks)."""
        if not self.batches:
            raise ParityError("no inputs were compared")
        values = {m.name: m.aggregate(self.parts[m.name]) for m in self.metrics if m.compute is not None}
        if reference is not None:
            values.update({m.name: m.derive(values, reference) for m in self.metrics if m.derive is not None})
        return values


def needing_truth() -> tuple[str, ...]:
    """The metrics measured against ground truth: what the reference itself is scored on, for derived ones."""
    return tuple(m.name for m in METRICS.values() if m.needs_labels and m.compute is not None)


def task_metrics(task: str, reference: np.ndarray, candidate: np.ndarray, shared: Shared | None = None
                 ) -> dict[str, float]:
    """The task metrics between two batches of outputs (deploykit.metrics.tasks defines each); `shared`: see
    Pair."""
    scores = Scores(task_of(task), numeric=False)
    scores.add(reference, candidate, shared=shared)
    return scores.result()
