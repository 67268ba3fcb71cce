"""Per-class damage of segmentation candidates: which classes a lower precision hurts, and where (issue 13, item 3).

A pixel agreement of 98.5% says nothing about whether the 1.5% are thin slivers along object outlines (benign:
the reference itself is least sure there) or a blob eating a small class. These counts say which.

Definitions (R = reference labels, C = a candidate's labels, G = ground truth; H,W integer class maps, counted
over all inputs, dataset-level as metrics.miou and PASCAL VOC):
- IoU_k = |R_k & C_k| / |R_k | C_k|; None when class k is in neither map (0/0). Against ground truth the
  reference and every candidate are scored on G's pixels except those labelled IGNORE_INDEX (255, PASCAL VOC's
  "void" outline and SegmentationClass convention).
- pixel share of class k = |R_k| / pixels (reference side) and |C_k| / pixels (candidate side): a class that
  grows or shrinks under the candidate.
- loss of class k (`CandidateDamage.worst`): 1 - IoU_k against the reference; against ground truth, the
  reference's IoU_k minus the candidate's (what deployment lost, not what the model never had).
- boundary band: reference pixels with a 4-neighbour of another class, grown by BOUNDARY_WIDTH - 1 pixels
  (3x3 square, Chebyshev), so it holds BOUNDARY_WIDTH (2) pixels on each side of every class edge; the image
  border is not an edge. This is the band of Boundary IoU (Cheng et al., CVPR 2021: mask minus its erosion by d,
  on each class's side). The split of disagreeing pixels (C != R) between band and interior comes with the band's
  share of all pixels (where uniformly scattered flips would land) and the flip rate in each region: boundary
  flips are benign, interior blobs are not (NVIDIA/TensorRT#4798 reported 30% of masks differing, at boundaries).
- disagreement of one input: the share of its pixels where C != R (segmentation), or the mean |C - R| over the
  reference's range (saliency); `most_disagreeing` picks the inputs to draw (report/masks.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from deploykit.errors import ParityError
from deploykit.io.labels import IGNORE_INDEX

BOUNDARY_WIDTH = 2
PICTURED_INPUTS = 4
Against = Literal["reference", "labels"]


@dataclass(frozen=True)
class ClassDamage:
    """One class's counts for one candidate; shares and IoU are derived, so results over inputs just add."""

    index: int
    intersection: int
    union: int
    reference_pixels: int  # labelled `index` by the reference (or by the ground truth, against labels)
    candidate_pixels: int
    total_pixels: int

    @property
    def iou(self) -> float | None:
        return self.intersection / self.union if self.union else None

    @property
    def reference_share(self) -> float:
        return self.reference_pixels / self.total_pixels if self.total_pixels else 0.0

    @property
    def candidate_share(self) -> float:
        return self.candidate_pixels / self.total_pixels if self.total_pixels else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "intersection": self.intersection, "union": self.union,
                "reference_pixels": self.reference_pixels, "candidate_pixels": self.candidate_pixels,
                "total_pixels": self.total_pixels, "iou": self.iou, "reference_share": self.reference_share,
                "candidate_share": self.candidate_share}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassDamage:
        return cls(index=int(data["index"]), intersection=int(data["intersection"]), union=int(data["union"]),
                   reference_pixels=int(data["reference_pixels"]), candidate_pixels=int(data["candidate_pixels"]),
                   total_pixels=int(data["total_pixels"]))


@dataclass(frozen=True)
class BoundarySplit:
    """Where a candidate's disagreeing pixels lie: in the reference's boundary band or in class interiors."""

    disagreeing: int
    on_boundary: int  # disagreeing pixels inside the band
    band: int  # pixels in the band
    pixels: int

    @property
    def boundary_share(self) -> float:
        """Share of the disagreeing pixels that lie in the band (0 when nothing disagrees)."""
        return self.on_boundary / self.disagreeing if self.disagreeing else 0.0

    @property
    def band_share(self) -> float:
        """Share of all pixels in the band: the boundary_share that uniformly scattered flips would give."""
        return self.band / self.pixels if self.pixels else 0.0

    @property
    def boundary_rate(self) -> float:
        return self.on_boundary / self.band if self.band else 0.0

    @property
    def interior_rate(self) -> float:
        interior = self.pixels - self.band
        return (self.disagreeing - self.on_boundary) / interior if interior else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"disagreeing": self.disagreeing, "on_boundary": self.on_boundary, "band": self.band,
                "pixels": self.pixels, "boundary_share": self.boundary_share, "band_share": self.band_share,
                "boundary_rate": self.boundary_rate, "interior_rate": self.interior_rate}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoundarySplit:
        return cls(disagreeing=int(data["disagreeing"]), on_boundary=int(data["on_boundary"]),
                   band=int(data["band"]), pixels=int(data["pixels"]))


@dataclass(frozen=True)
class CandidateDamage:
    """One candidate's per-class damage against the reference, or (with ground truth) against the labels."""

    label: str
    against: Against
    classes: tuple[ClassDamage, ...]  # the classes present in either map, by index
    agreeing: int  # pixels labelled alike
    pixels: int  # pixels compared (ground truth: those not IGNORE_INDEX)
    boundary: BoundarySplit | None = None  # against the reference only

    @property
    def pixel_agreement(self) -> float:
        return self.agreeing / self.pixels if self.pixels else 1.0

    @property
    def miou(self) -> float:
        ious = [c.iou for c in self.classes if c.iou is not None]
        return float(np.mean(ious)) if ious else 1.0

    def iou(self, index: int) -> float | None:
        return next((c.iou for c in self.classes if c.index == index), None)

    def losses(self, baseline: CandidateDamage | None = None) -> dict[int, float]:
        """Loss per class: 1 - IoU, or the baseline's IoU minus this IoU (see the module docstring)."""
        out = {}
        for damage in self.classes:
            iou = damage.iou or 0.0
            if baseline is None:
                out[damage.index] = 1.0 - iou
            else:
                out[damage.index] = (baseline.iou(damage.index) or 0.0) - iou
        return out

    def worst(self, count: int = 3, baseline: CandidateDamage | None = None) -> tuple[tuple[int, float], ...]:
        """The `count` classes that lose most, (index, loss), largest loss first, only losses above 0; ties go
        to the class with more reference pixels (the one a reader will see). Only classes the reference side
        has can lose: a class the candidate invents on a few pixels would otherwise top the list with IoU 0,
        while the pixels it took already count against the classes they were taken from."""
        pixels = {c.index: c.reference_pixels for c in self.classes}
        ranked = sorted(((k, v) for k, v in self.losses(baseline).items() if pixels[k] > 0),
                        key=lambda kv: (-kv[1], -pixels[kv[0]], kv[0]))
        return tuple((index, loss) for index, loss in ranked[:count] if loss > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "against": self.against, "classes": [c.to_dict() for c in self.classes],
                "agreeing": self.agreeing, "pixels": self.pixels, "pixel_agreement": self.pixel_agreement,
                "miou": self.miou, "boundary": self.boundary.to_dict() if self.boundary else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateDamage:
        boundary = data.get("boundary")
        return cls(label=str(data["label"]), against=data["against"],
                   classes=tuple(ClassDamage.from_dict(c) for c in data["classes"]),
                   agreeing=int(data["agreeing"]), pixels=int(data["pixels"]),
                   boundary=BoundarySplit.from_dict(boundary) if boundary else None)


@dataclass(frozen=True)
class ClassDamageResult:
    """Every candidate's damage, the reference's and candidates' scores against ground truth when given, and
    each input's disagreement per candidate (rows: inputs in order; columns: candidates in order)."""

    candidates: tuple[CandidateDamage, ...]
    disagreement: tuple[tuple[float, ...], ...]
    labels: tuple[CandidateDamage, ...] = ()  # against ground truth: the reference first, then each candidate

    def most_disagreeing(self, count: int = PICTURED_INPUTS) -> tuple[int, ...]:
        return most_disagreeing(self.disagreement, count)

    def baseline(self) -> CandidateDamage | None:
        """The reference scored against ground truth (None without labels)."""
        return self.labels[0] if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        return {"candidates": [c.to_dict() for c in self.candidates],
                "disagreement": [list(row) for row in self.disagreement],
                "labels": [c.to_dict() for c in self.labels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassDamageResult:
        return cls(candidates=tuple(CandidateDamage.from_dict(c) for c in data["candidates"]),
                   disagreement=tuple(tuple(float(v) for v in row) for row in data["disagreement"]),
                   labels=tuple(CandidateDamage.from_dict(c) for c in data.get("labels", ())))


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2 radius + 1) square, separably (a row pass then a column pass), in numpy."""
    out = mask
    for axis in (0, 1):
        grown = out.copy()
        length = out.shape[axis]
        for shift in range(1, min(radius, length - 1) + 1):
            head = [slice(None)] * 2
            tail = [slice(None)] * 2
            head[axis], tail[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(head)] |= out[tuple(tail)]
            grown[tuple(tail)] |= out[tuple(head)]
        out = grown
    return out


def boundary_band(labels: np.ndarray, width: int = BOUNDARY_WIDTH) -> np.ndarray:
    """H,W bool: pixels within `width` pixels of a class edge of `labels` on either side (module docstring)."""
    if labels.ndim != 2:
        raise ParityError(f"a class map must be H,W; got shape {list(labels.shape)}")
    if width < 1:
        raise ParityError(f"the boundary width must be at least 1 pixel, got {width}")
    edge = np.zeros(labels.shape, dtype=bool)
    down = labels[1:, :] != labels[:-1, :]
    right = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= down
    edge[:-1, :] |= down
    edge[:, 1:] |= right
    edge[:, :-1] |= right
    return _grow(edge, width - 1)


def _as_maps(labels: np.ndarray) -> np.ndarray:
    """H,W or N,H,W integer labels -> N,H,W int64."""
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3:
        raise ParityError(f"class maps must be H,W or N,H,W; got shape {list(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ParityError(f"class maps must hold integer labels, got {labels.dtype}; take the argmax of the scores "
                          "first (metrics.segmentation_labels)")
    return labels.astype(np.int64, copy=False)


class _Counts:
    """One comparison's running sums (a mutable helper of DamageAccumulator)."""

    def __init__(self) -> None:
        self.intersection = np.zeros(0, dtype=np.int64)
        self.first = np.zeros(0, dtype=np.int64)
        self.second = np.zeros(0, dtype=np.int64)
        self.agreeing = self.pixels = self.disagreeing = self.on_boundary = self.band = 0

    def add(self, first: np.ndarray, second: np.ndarray) -> None:
        """first, second: 1-D labels of the same pixels (the side that plays the truth first)."""
        size = int(max(first.max(initial=0), second.max(initial=0))) + 1
        if self.first.size < size:
            grow = size - self.first.size
            self.intersection, self.first, self.second = (np.pad(a, (0, grow)) for a in
                                                          (self.intersection, self.first, self.second))
        same = first == second
        self.intersection[:size] += np.bincount(first[same], minlength=size)
        self.first[:size] += np.bincount(first, minlength=size)
        self.second[:size] += np.bincount(second, minlength=size)
        self.agreeing += int(same.sum())
        self.pixels += first.size

    def damage(self, label: str, against: Against, with_boundary: bool) -> CandidateDamage:
        union = self.first + self.second - self.intersection
        classes = tuple(ClassDamage(int(k), int(self.intersection[k]), int(union[k]), int(self.first[k]),
                                    int(self.second[k]), self.pixels) for k in np.flatnonzero(union))
        split = BoundarySplit(self.disagreeing, self.on_boundary, self.band, self.pixels) if with_boundary else None
        return CandidateDamage(label, against, classes, self.agreeing, self.pixels, split)


class DamageAccumulator:
    """Per-class damage streamed over inputs, as the parity run streams them: `add` one input's class maps
    (reference, each candidate in the order of `labels`, optionally the ground truth), then `result`."""

    def __init__(self, labels: Sequence[str], *, boundary_width: int = BOUNDARY_WIDTH,
                 ignore_index: int = IGNORE_INDEX) -> None:
        if not labels:
            raise ParityError("per-class damage needs at least one candidate")
        self.labels = tuple(labels)
        self.boundary_width, self.ignore_index = boundary_width, ignore_index
        self._vs_reference = [_Counts() for _ in self.labels]
        self._vs_truth = [_Counts() for _ in range(len(self.labels) + 1)]
        self._disagreement: list[tuple[float, ...]] = []
        self._with_truth: bool | None = None

    def add(self, reference: np.ndarray, candidates: Sequence[np.ndarray],
            ground_truth: np.ndarray | None = None) -> None:
        """Class maps H,W or N,H,W (integer labels, e.g. metrics.segmentation_labels of the scores)."""
        if len(candidates) != len(self.labels):
            raise ParityError(f"{len(candidates)} candidate class maps for {len(self.labels)} candidates")
        if self._with_truth is not None and self._with_truth != (ground_truth is not None):
            raise ParityError("ground truth must be given for every input or for none")
        self._with_truth = ground_truth is not None
        ref = _as_maps(reference)
        cands = [_as_maps(c) for c in candidates]
        truth = _as_maps(ground_truth) if ground_truth is not None else None
        for maps in (*cands, *([truth] if truth is not None else [])):
            if maps.shape != ref.shape:
                raise ParityError(f"class maps of shape {list(maps.shape)} against the reference's {list(ref.shape)}")
        for n in range(ref.shape[0]):
            self._add_one(ref[n], [c[n] for c in cands], None if truth is None else truth[n])

    def _add_one(self, ref: np.ndarray, cands: list[np.ndarray], truth: np.ndarray | None) -> None:
        band = boundary_band(ref, self.boundary_width)
        row = []
        for counts, cand in zip(self._vs_reference, cands, strict=True):
            counts.add(ref.ravel(), cand.ravel())
            differ = ref != cand
            counts.disagreeing += int(differ.sum())
            counts.on_boundary += int((differ & band).sum())
            counts.band += int(band.sum())
            row.append(float(differ.mean()))
        self._disagreement.append(tuple(row))
        if truth is not None:
            valid = truth != self.ignore_index
            for counts, pred in zip(self._vs_truth, [ref, *cands], strict=True):
                counts.add(truth[valid], pred[valid])

    def result(self) -> ClassDamageResult:
        if not self._disagreement:
            raise ParityError("no class maps were compared")
        labels: tuple[CandidateDamage, ...] = ()
        if self._with_truth:
            labels = tuple(c.damage(name, "labels", False)
                           for c, name in zip(self._vs_truth, ("reference", *self.labels), strict=True))
        return ClassDamageResult(
            candidates=tuple(c.damage(name, "reference", True) for c, name in zip(self._vs_reference, self.labels,
                                                                                  strict=True)),
            disagreement=tuple(self._disagreement), labels=labels)


def class_damage(reference: np.ndarray, candidates: Mapping[str, np.ndarray],
                 ground_truth: np.ndarray | None = None, *, boundary_width: int = BOUNDARY_WIDTH,
                 ignore_index: int = IGNORE_INDEX) -> ClassDamageResult:
    """Per-class damage of N,H,W (or H,W) class maps in one call; see DamageAccumulator to stream."""
    accumulator = DamageAccumulator(list(candidates), boundary_width=boundary_width, ignore_index=ignore_index)
    accumulator.add(reference, list(candidates.values()), ground_truth)
    return accumulator.result()


def saliency_disagreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean |candidate - reference| over the reference's range (max - min; 1 when flat), for one input's maps."""
    r, c = reference.astype(np.float64), candidate.astype(np.float64)
    if r.shape != c.shape:
        raise ParityError(f"saliency maps of shapes {list(r.shape)} and {list(c.shape)}")
    span = float(r.max() - r.min()) if r.size else 0.0
    return float(np.mean(np.abs(c - r))) / (span if span > 0 else 1.0)


def most_disagreeing(disagreement: Sequence[Sequence[float]], count: int = PICTURED_INPUTS) -> tuple[int, ...]:
    """Indices of the (up to `count`) inputs where the candidates disagree most with the reference: ranked by
    the worst candidate's disagreement, then the mean over candidates, then input order; inputs where no
    candidate disagrees at all are not picked (a picture of identical masks shows nothing)."""
    scored = [(max(row), float(np.mean(row)), index) for index, row in enumerate(disagreement) if row and max(row) > 0]
    scored.sort(key=lambda s: (-s[0], -s[1], s[2]))
    return tuple(index for _, _, index in scored[:max(count, 0)])
