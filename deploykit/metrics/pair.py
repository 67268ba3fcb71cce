"""One batch of one output, compared: what a metric entry's `compute` reads (deploykit.metrics.table).

A Pair holds the reference's and the candidate's arrays, the task they are a prediction of (None: any output),
the ground-truth masks when there are any, and what several metrics share, computed once on first use: the
numeric metrics, both sides' label maps, the class counts, the saliency scores per image. A metric from
another package (an entry point `deploykit.metrics`) reads the same: e.g. `pair.labels` for a label metric.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any

import numpy as np

from deploykit.errors import ParityError
from deploykit.metrics.numeric import NumericMetrics, ReferenceSide, numeric_metrics, reference_side
from deploykit.metrics.tasks import (
    ClassCounts,
    class_counts,
    class_labels,
    label_pair,
    saliency_scores,
    truth_counts,
)
from deploykit.types import TaskEntry


class Shared:
    """What the pairs of one input derive from the same array, each derived once: parity compares one reference
    with every candidate and pictures them all. An argmax of 21 x 513 x 513 scores takes about 20 ms, the
    reference's side of the numeric metrics about 40 ms. Arrays are told apart by identity (each kept alive
    beside what was derived from it, so an id is not reused); what it gives is shared: read only."""

    def __init__(self) -> None:
        self._kept: dict[tuple[Hashable, int], tuple[np.ndarray, Any]] = {}

    def fork(self) -> Shared:
        """A Shared that starts with what this one derived and keeps what it derives later to itself: the
        reference's side stays, the candidates' go with the fork (a budget search scores many candidates)."""
        child = Shared()
        child._kept = dict(self._kept)
        return child

    def labels(self, output: np.ndarray) -> np.ndarray:
        """tasks.class_labels of `output`."""
        found: np.ndarray = self._derived("labels", output, class_labels)
        return found

    def reference_side(self, reference: np.ndarray, atol: float, rtol: float) -> ReferenceSide:
        found: ReferenceSide = self._derived(("numeric", atol, rtol), reference,
                                             lambda r: reference_side(r, atol=atol, rtol=rtol))
        return found

    def _derived(self, kind: Hashable, array: np.ndarray, derive: Callable[[np.ndarray], Any]) -> Any:
        kept = self._kept.get((kind, id(array)))
        if kept is None or kept[0] is not array:
            kept = self._kept[(kind, id(array))] = (array, derive(array))
        return kept[1]


class Pair:
    def __init__(self, reference: np.ndarray, candidate: np.ndarray, task: TaskEntry | None, *,
                 truth: np.ndarray | None = None, atol: float = 1e-4, rtol: float = 1e-3,
                 shared: Shared | None = None) -> None:
        """`shared`: what the pairs of the same input share (Shared), when there are several."""
        self.reference, self.candidate, self.task, self.truth = reference, candidate, task, truth
        self.atol, self.rtol, self.shared = atol, rtol, shared

    @cached_property
    def numeric(self) -> NumericMetrics:
        prepared = self.shared.reference_side(self.reference, self.atol, self.rtol) if self.shared else None
        return numeric_metrics(self.reference, self.candidate, atol=self.atol, rtol=self.rtol, prepared=prepared)

    @cached_property
    def labels(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Reference labels, candidate labels (N,H,W) and how many classes they range over."""
        return label_pair(self.reference, self.candidate, self.shared.labels if self.shared else class_labels)

    @cached_property
    def class_counts(self) -> ClassCounts:
        """The candidate's labels against the reference's (pixel agreement, mIoU)."""
        reference, candidate, classes = self.labels
        return class_counts(reference, candidate, classes)

    @cached_property
    def truth_counts(self) -> ClassCounts:
        """The candidate's labels against the ground truth (miou_gt)."""
        if self.truth is None:
            raise ParityError("a metric against ground truth needs label masks (--labels)")
        return truth_counts(self.candidate, self.truth)

    @cached_property
    def saliency(self) -> dict[str, list[float]]:
        """Every saliency metric per image of the batch."""
        return saliency_scores(self.reference, self.candidate)
