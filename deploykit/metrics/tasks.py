"""Task metrics: what each task metric is computed from, one batch at a time (the tasks' table is types.TASKS)
(deploykit.metrics.scores streams them over inputs; the METRICS entries name these functions):

Segmentation, outputs N,C,H,W of logits or probabilities (C == 1: binary, label = value > 0):
- pixel_agreement = share of pixels where argmax_c(candidate) == argmax_c(reference).
- miou = mean over classes k of |R_k & C_k| / |R_k | C_k|, R_k / C_k the pixels labelled k by the reference /
  the candidate, counted over all inputs (dataset-level IoU, as in PASCAL VOC and Cityscapes). Classes absent
  from both label maps are ignored (their IoU is 0/0); a class present in only one of them scores 0. The
  reference's labels play the part of the ground truth. Reported, not gated by default: a class the candidate
  puts on one stray pixel scores 0 and, among three classes present, takes mIoU from 1.0 to 0.75 while pixel
  agreement stays 0.99998 (tests/metrics/test_metrics.py; issue 12: a real INT8 run had pixel agreement
  0.988 and mIoU 0.60).
- miou_major = the same mean over the classes k that cover at least MAJOR_CLASS_SHARE (1%) of the reference's
  pixels (|R_k| >= 1% of all pixels, over all inputs); the largest class when none does. This is what the
  default gates use. Why 1%: a class of A pixels shaped like a square loses about 4 / sqrt(A) of its IoU when
  its outline moves by one pixel, so at 512x512 a 1% class (2,621 px) keeps IoU ~0.92 under a benign boundary
  shift, while a class of a handful of pixels swings between 0 and 1; classes a candidate invents never reach
  the share because it is measured on the reference. mIoU over all classes stays reported beside it.

Segmentation against ground truth (`truth_counts`; parity --labels DIR, PNG class indices):
- miou_gt = dataset-level mIoU of a side's argmax labels against the ground-truth masks, over the pixels not
  labelled IGNORE_INDEX (255, PASCAL VOC's void); classes in neither map are ignored (mmsegmentation's
  nanmean). Masks of another size than the output are resized to it by nearest neighbour.
- miou_drop = 100 * (miou_gt of the FP32 reference - miou_gt of the candidate), in mIoU points, the figure
  MMDeploy's and papers' INT8 tables report (e.g. -6.65 points, qualcomm/ai-hub-models#200).

Saliency, maps N,1,H,W or N,H,W, per image, then averaged over images (as the MIT saliency benchmark does).
Definitions follow the MIT/Tuebingen benchmark code (Bylinskii et al., "What do different evaluation metrics
tell us about saliency models?", TPAMI 2018); the reference map is the ground-truth side, the candidate the
prediction. A map with negative values (logits) is first shifted to a minimum of 0 for the distribution
metrics (kld, sim); cc and nss are invariant to that shift.
- cc = Pearson correlation of the two maps. cc, sim and kld are kept within their ranges ([-1, 1], [0, 1],
  >= 0) by np.clip (a NaN stays NaN): rounding alone puts identical maps past them (sim 1.0000000000000002),
  which reads as impossible.
- kld = sum Q * log(eps + Q / (P + eps)), P = candidate / sum(candidate), Q = reference / sum(reference),
  eps = 2.2204e-16 (MATLAB's eps, as in KLdiv.m), at least 0: the eps terms alone give identical maps of N
  pixels -(N - 1) eps (-5.1e-13 at 48x48), which reports read as a negative divergence. 0 for identical maps.
- sim = sum min(P', Q'), P' / Q' the maps min-max scaled to [0, 1] and then normalised to sum 1 (similarity.m).
  1 for identical maps.
- nss = mean of the candidate map, standardised to zero mean and unit standard deviation (MATLAB's std, N - 1 in
  the denominator, as in NSS.m), at fixation pixels. The benchmark needs binary fixations, which a parity run
  has not got; they are derived from the reference map as its top FIXATION_FRACTION (2%) of pixels (at least
  one; pixels tied at the threshold share the remaining weight equally, so no plateau pixel is favoured),
  the densest part of the reference prediction, which is what fixations sample. A constant candidate map
  scores 0.
- nss_ratio = nss of the candidate / nss of the reference on the same fixations (1 when they agree; NSS alone
  depends on the image, so the ratio is what a parity gate can use).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deploykit.errors import ParityError
from deploykit.io.labels import IGNORE_INDEX
from deploykit.types import TASKS, TaskEntry

MAJOR_CLASS_SHARE = 0.01  # miou_major's share of the reference's pixels (module docstring: why 1%)
FIXATION_FRACTION = 0.02
MATLAB_EPS = 2.2204e-16


def segmentation_labels(output: np.ndarray) -> np.ndarray:
    """N,C,H,W scores -> N,H,W labels (argmax over C; C == 1 is binary: score > 0)."""
    if output.ndim != 4:
        raise ParityError(f"a segmentation output must be N,C,H,W; got shape {list(output.shape)}")
    if output.shape[1] == 1:
        return (output[:, 0] > 0).astype(np.int64)
    return np.argmax(output, axis=1)


def is_class_map(output: np.ndarray) -> bool:
    """An N,H,W integer array: the output of a segmentation model exported with `--head argmax`."""
    return output.ndim == 3 and bool(np.issubdtype(output.dtype, np.integer))


def class_labels(output: np.ndarray) -> np.ndarray:
    """N,H,W labels from scores (segmentation_labels) or from a class map as it is."""
    return output.astype(np.int64) if is_class_map(output) else segmentation_labels(output)


def saliency_maps(output: np.ndarray, dtype: type[np.floating[Any]] = np.float64) -> np.ndarray:
    """N,H,W maps from a saliency output of shape N,1,H,W or N,H,W."""
    if output.ndim == 4 and output.shape[1] == 1:
        return output[:, 0].astype(dtype)
    if output.ndim == 3:
        return output.astype(dtype)
    raise ParityError(f"a saliency output must be N,1,H,W or N,H,W; got shape {list(output.shape)}")


def _as_distribution(saliency: np.ndarray) -> np.ndarray:
    shifted = saliency - min(float(saliency.min()), 0.0)
    total = float(shifted.sum())
    return shifted / total if total > 0 else shifted


def _standardise(saliency: np.ndarray) -> np.ndarray | None:
    std = float(saliency.std(ddof=1)) if saliency.size > 1 else 0.0
    return None if std == 0.0 else (saliency - saliency.mean()) / std


def fixations_from_reference(reference: np.ndarray, fraction: float = FIXATION_FRACTION) -> np.ndarray:
    """Fixation weights: 1 on the reference map's top `fraction` of pixels (at least one pixel's worth).

    Pixels tied at the threshold share the remaining slots equally (weight remaining / tied), which is the
    expectation over every way of breaking the tie: no pixel of a plateau is preferred (breaking ties by
    position took the plateau's first pixels in raster order, so a candidate keeping only those scored
    above the reference itself). Deterministic, and the weights sum to the fixation count.
    """
    flat = np.nan_to_num(reference.ravel().astype(np.float64), nan=-np.inf)  # a NaN is never a fixation
    count = max(1, round(fraction * flat.size))
    threshold = np.partition(flat, flat.size - count)[flat.size - count]  # the count-th largest value
    above, tied = flat > threshold, flat == threshold
    weights = above.astype(np.float64)
    weights[tied] = (count - int(above.sum())) / int(tied.sum())
    return weights.reshape(reference.shape)


def cc(reference: np.ndarray, candidate: np.ndarray) -> float:
    r, c = reference.ravel() - reference.mean(), candidate.ravel() - candidate.mean()
    denominator = math.sqrt(float(np.dot(r, r)) * float(np.dot(c, c)))
    if denominator == 0.0:
        return 1.0 if np.array_equal(reference, candidate) else 0.0
    return float(np.clip(np.dot(r, c) / denominator, -1.0, 1.0))  # rounding can step past +-1 (docstring)


def kld(reference: np.ndarray, candidate: np.ndarray) -> float:
    q, p = _as_distribution(reference), _as_distribution(candidate)
    return float(np.clip(np.sum(q * np.log(MATLAB_EPS + q / (p + MATLAB_EPS))), 0.0, None))  # never < 0: docstring


def sim(reference: np.ndarray, candidate: np.ndarray) -> float:
    def scaled(x: np.ndarray) -> np.ndarray:
        span = float(x.max() - x.min())
        unit = (x - x.min()) / span if span > 0 else np.zeros_like(x)
        total = float(unit.sum())
        return unit / total if total > 0 else unit
    return float(np.clip(np.sum(np.minimum(scaled(reference), scaled(candidate))), 0.0, 1.0))  # docstring


def nss(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """Mean of the standardised map over the fixations: a boolean map, or weights (`fixations_from_reference`
    gives fractional ones to ties), for which it is the weighted mean."""
    standardised = _standardise(saliency)
    weights = np.asarray(fixations, dtype=np.float64)
    total = float(weights.sum())
    if standardised is None or total == 0.0:
        return 0.0
    return float(np.sum(standardised * weights) / total)


@dataclass(frozen=True)
class ClassCounts:
    """What the label metrics of one batch add up: pixels where two label maps agree, of how many, and per class
    the intersection, union and pixels of the first (the reference's, or the ground truth's) map."""

    agree: int
    pixels: int
    intersection: np.ndarray
    union: np.ndarray
    first: np.ndarray


def class_counts(first: np.ndarray, second: np.ndarray, classes: int) -> ClassCounts:
    """ClassCounts of two label maps of the same shape holding labels below `classes`."""
    first_counts = np.bincount(first.ravel(), minlength=classes)
    second_counts = np.bincount(second.ravel(), minlength=classes)
    both = np.bincount(first[first == second].ravel(), minlength=classes)
    return ClassCounts(int(np.sum(first == second)), first.size, both, first_counts + second_counts - both,
                       first_counts)


def summed(parts: Sequence[ClassCounts]) -> ClassCounts:
    """Batches' counts added up, over as many classes as the widest batch saw (dataset-level IoU)."""
    size = max(len(p.union) for p in parts)

    def total(arrays: Sequence[np.ndarray]) -> np.ndarray:
        return np.sum([np.pad(a, (0, size - len(a))) for a in arrays], axis=0)
    return ClassCounts(sum(p.agree for p in parts), sum(p.pixels for p in parts),
                       total([p.intersection for p in parts]), total([p.union for p in parts]),
                       total([p.first for p in parts]))


def _counted(parts: Sequence[ClassCounts], what: str) -> ClassCounts:
    counts = summed(parts) if parts else None
    if counts is None or counts.pixels == 0:
        raise ParityError(what)
    return counts


def pixel_agreement(parts: Sequence[ClassCounts]) -> float:
    counts = _counted(parts, "no segmentation outputs were compared")
    return counts.agree / counts.pixels


def mean_iou(parts: Sequence[ClassCounts]) -> float:
    """mIoU over the classes present in either map (module docstring)."""
    counts = _counted(parts, "no segmentation outputs were compared")
    present = counts.union > 0
    return float(np.mean(counts.intersection[present] / counts.union[present]))


def major_iou(parts: Sequence[ClassCounts]) -> float:
    """mIoU over the classes covering MAJOR_CLASS_SHARE of the first map's pixels (the largest when none does)."""
    counts = _counted(parts, "no segmentation outputs were compared")
    iou = np.zeros(counts.union.size)
    present = counts.union > 0
    iou[present] = counts.intersection[present] / counts.union[present]
    major = counts.first >= MAJOR_CLASS_SHARE * counts.pixels
    if not major.any():
        major = counts.first == counts.first.max()
    return float(np.mean(iou[major]))


def truth_iou(parts: Sequence[ClassCounts]) -> float:
    """mIoU of predicted labels against ground truth (miou_gt), the ignored pixels left out."""
    counts = summed(parts) if parts else None
    if counts is None or counts.pixels == 0:
        raise ParityError("every ground-truth pixel is labelled 255 (ignored); no mIoU against labels")
    present = counts.union > 0
    return float(np.mean(counts.intersection[present] / counts.union[present]))


def label_pair(reference: np.ndarray, candidate: np.ndarray,
               labels_of: Callable[[np.ndarray], np.ndarray] = class_labels) -> tuple[np.ndarray, np.ndarray, int]:
    """Both sides' N,H,W labels and the number of classes they range over: from scores (argmax), or compared
    directly where either side is a class map (an --head argmax output; scores on the other side argmaxed).
    `labels_of`: class_labels, or pair.Shared.labels, which keeps them."""
    if is_class_map(reference) or is_class_map(candidate):
        ref, cand = labels_of(reference), labels_of(candidate)
        if ref.shape != cand.shape:
            raise ParityError(f"class maps differ in shape: reference {list(ref.shape)}, candidate "
                              f"{list(cand.shape)}")
        if min(int(ref.min(initial=0)), int(cand.min(initial=0))) < 0:
            raise ParityError("a class map holds negative labels")
        scores = [x.shape[1] for x in (reference, candidate) if not is_class_map(x)]
        return ref, cand, max(2, *scores, int(ref.max(initial=0)) + 1, int(cand.max(initial=0)) + 1)
    _same_shape(reference, candidate)
    return labels_of(reference), labels_of(candidate), max(2, reference.shape[1])


def truth_counts(output: np.ndarray, truth: np.ndarray, ignore_index: int = IGNORE_INDEX) -> ClassCounts:
    """ClassCounts of ground-truth masks (N,H,W, or H,W for one output) against one batch's argmax labels;
    masks of another size are resized by nearest neighbour, IGNORE_INDEX pixels left out."""
    predicted = segmentation_labels(output)
    masks = truth[None] if truth.ndim == 2 else truth
    if masks.shape[0] != predicted.shape[0]:
        raise ParityError(f"{masks.shape[0]} label masks for a batch of {predicted.shape[0]} outputs")
    masks = np.stack([resize_mask(m, predicted.shape[1:]) for m in masks]).astype(np.int64)
    valid = masks != ignore_index
    truth_flat, pred_flat = masks[valid], predicted[valid].astype(np.int64)
    size = int(max(truth_flat.max(initial=0), pred_flat.max(initial=0))) + 1
    counts = class_counts(truth_flat, pred_flat, size)
    return ClassCounts(counts.agree, int(valid.sum()), counts.intersection, counts.union, counts.first)


def saliency_scores(reference: np.ndarray, candidate: np.ndarray) -> dict[str, list[float]]:
    """Each saliency metric (module docstring) per image of one batch."""
    _same_shape(reference, candidate)
    scores: dict[str, list[float]] = {"cc": [], "kld": [], "nss": [], "sim": [], "nss_ratio": []}
    for ref, cand in zip(saliency_maps(reference), saliency_maps(candidate), strict=True):
        fixations = fixations_from_reference(ref)
        ref_nss, cand_nss = nss(ref, fixations), nss(cand, fixations)
        values = {"cc": cc(ref, cand), "kld": kld(ref, cand), "sim": sim(ref, cand), "nss": cand_nss,
                  "nss_ratio": cand_nss / ref_nss if ref_nss != 0.0 else float(cand_nss == 0.0)}
        for key, value in values.items():
            scores[key].append(value)
    return scores


def image_mean(parts: Sequence[Sequence[float]]) -> float:
    """The mean over every image of every batch (per-image metrics, as the MIT saliency benchmark averages)."""
    values = [v for part in parts for v in part]
    if not values:
        raise ParityError("no saliency maps were compared")
    return float(np.mean(values))


def _same_shape(reference: np.ndarray, candidate: np.ndarray) -> None:
    if reference.shape != candidate.shape:
        raise ParityError(f"output shapes differ: reference {list(reference.shape)}, candidate "
                          f"{list(candidate.shape)}")


def resize_mask(mask: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """A H,W class mask at another H,W by nearest neighbour (pixel centres), so no class index is invented."""
    if mask.shape == tuple(size):
        return mask
    rows = np.minimum(((np.arange(size[0]) + 0.5) * mask.shape[0] / size[0]).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * mask.shape[1] / size[1]).astype(np.int64), mask.shape[1] - 1)
    return mask[rows][:, cols]


def task_of(name: str | None) -> TaskEntry | None:
    """The entry of `name` (None for None), or a ParityError listing the tasks."""
    if name is None:
        return None
    if name not in TASKS:
        raise ParityError(f"unknown task {name!r}; task metrics exist for {', '.join(TASKS)}")
    return TASKS[name]
