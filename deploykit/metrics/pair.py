"""One batch of one output, compared: what a metric entry's `compute` reads (deploykit.metrics.table).

A Pair holds the reference's and the candidate's arrays, the task they are a prediction of (None: any output),
the ground-truth masks when there are any, and what several metrics share, computed once on first use: the
numeric metrics, both sides' label maps, the class counts, the saliency scores per image. A metric from
another package (an entry point `deploykit.metrics`) reads the same: e.g. `pair.labels` for a label metric.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from deploykit.errors import ParityError
from deploykit.metrics.numeric import NumericMetrics, numeric_metrics
from deploykit.metrics.tasks import (
    ClassCounts,
    class_counts,
    class_labels,
    label_pair,
    saliency_scores,
    truth_counts,
)
from deploykit.types import TaskEntry


class Pair:
    def __init__(self, reference: np.ndarray, candidate: np.ndarray, task: TaskEntry | None, *,
                 truth: np.ndarray | None = None, atol: float = 1e-4, rtol: float = 1e-3,
                 labels_of: Callable[[np.ndarray], np.ndarray] = class_labels) -> None:
        """`labels_of`: how label maps are taken (tasks.class_labels; a tasks.LabelMaps shares them between the
        pairs of one input)."""
        self.reference, self.candidate, self.task, self.truth = reference, candidate, task, truth
        self.atol, self.rtol, self.labels_of = atol, rtol, labels_of

    @cached_property
    def numeric(self) -> NumericMetrics:
        return numeric_metrics(self.reference, self.candidate, atol=self.atol, rtol=self.rtol)

    @cached_property
    def labels(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Reference labels, candidate labels (N,H,W) and how many classes they range over."""
        return label_pair(self.reference, self.candidate, self.labels_of)

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
