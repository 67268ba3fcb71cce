"""What a parity run keeps so that the report can draw its pictures without re-running a model (issue 13, item 2).

compare() streams the inputs and runs every target on each before the next, so a `PictureKeeper` offered each
input's reference and candidate outputs keeps the PICTURED_INPUTS (4) where the candidates disagree most, in
classes.most_disagreeing's order, without holding the others. Kept per input, compactly:
- the image as H,W,3 uint8 (`image_from_input` undoes io.images.preprocess on the tensor that was fed);
- segmentation: class maps (argmax, metrics.segmentation_labels) as uint8, uint16 beyond 256 classes: logits
  would be C times larger (21 x 4 bytes a pixel instead of 1) and the picture needs only the labels;
- saliency: float32 maps (an FP16 difference of 1e-3 of the range would vanish in 8 bits).
At 513x513 with three candidates that is 0.77 MB of image + 4 x 0.26 MB of class maps per input, 7.2 MB for
four; `save_pictures` writes them as one compressed .npz beside the summary so that a resumed deploy whose parity
step was skipped can still draw them (Pictures.from_npz reads it back).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import InputError, ParityError
from deploykit.io.outputs import atomic_output
from deploykit.metrics.tasks import class_labels, saliency_maps
from deploykit.parity.classes import PICTURED_INPUTS, saliency_disagreement
from deploykit.types import TASKS, Preprocessing, Task, TaskEntry


def image_from_input(x: np.ndarray, preprocessing: Preprocessing | None) -> np.ndarray:
    """A model input (1,3,H,W or 3,H,W) back to H,W,3 uint8 RGB by undoing io.images.preprocess; without the
    preprocessing (an ONNX file without metadata, random inputs), each channel min-max scaled."""
    chw = np.asarray(x, dtype=np.float64)
    chw = chw[0] if chw.ndim == 4 else chw
    if chw.ndim != 3 or chw.shape[0] != 3:
        raise InputError(f"an image input must be 1,3,H,W or 3,H,W; got shape {list(np.shape(x))}")
    hwc = chw.transpose(1, 2, 0)
    if preprocessing is None:
        low, high = hwc.min(axis=(0, 1)), hwc.max(axis=(0, 1))
        unit = (hwc - low) / np.where(high > low, high - low, 1.0)
    else:
        hwc = hwc * np.asarray(preprocessing.std) + np.asarray(preprocessing.mean)
        if preprocessing.channel_order == "BGR":
            hwc = hwc[..., ::-1]
        low, high = preprocessing.input_range
        unit = (hwc - low) / (high - low)
    return np.asarray(np.clip(np.rint(unit * 255), 0, 255), dtype=np.uint8)


@dataclass(frozen=True)
class PicturedInput:
    """One kept input: its position in the input set, the image, the reference's and each candidate's map (class
    labels or saliency, H,W), and each candidate's disagreement (classes module docstring)."""

    index: int
    image: np.ndarray
    reference: np.ndarray
    candidates: tuple[np.ndarray, ...]
    disagreement: tuple[float, ...]


@dataclass(frozen=True)
class Pictures:
    """The kept inputs of one parity run, most disagreeing first; `labels` name the candidates in order."""

    task: Task
    labels: tuple[str, ...]
    inputs: tuple[PicturedInput, ...]

    def save(self, path: str | os.PathLike[str], *, force: bool) -> Path:
        """One compressed .npz (atomic, never over a file without `force`)."""
        if not self.inputs:
            raise ParityError("no pictured inputs to save")
        arrays = {
            "task": np.array(self.task), "labels": np.array(self.labels, dtype=str),
            "index": np.array([p.index for p in self.inputs]),
            "disagreement": np.array([p.disagreement for p in self.inputs], dtype=np.float64),
            "image": np.stack([p.image for p in self.inputs]),
            "reference": np.stack([p.reference for p in self.inputs]),
            "candidates": np.stack([np.stack(p.candidates) for p in self.inputs]),
        }
        # Zipped in memory, then written: numpy's ZipFile, writing into the file, stayed open when a write failed
        # (a full disk) and was closed by the garbage collector after the file, printing "Exception ignored ...
        # ValueError: seek of closed file" and its traceback under deploykit's one error line.
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type, unused-ignore]  # numpy 2 stubs only
        with atomic_output(path, force=force) as tmp:
            Path(tmp).write_bytes(buffer.getvalue())
        return Path(path)

    @classmethod
    def from_npz(cls, path: str | os.PathLike[str]) -> Pictures:
        try:
            with np.load(path, allow_pickle=False) as data:
                labels = tuple(str(v) for v in data["labels"])
                images, references, candidates = data["image"], data["reference"], data["candidates"]
                inputs = tuple(PicturedInput(int(i), images[k], references[k], tuple(candidates[k]),
                                             tuple(float(v) for v in data["disagreement"][k]))
                               for k, i in enumerate(data["index"]))
                task = str(data["task"])
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"cannot read pictured inputs from {path}: {exc}") from exc
        if task not in TASKS:
            raise InputError(f"{path}: unknown task {task!r}")
        return cls(task=task, labels=labels, inputs=inputs)  # type: ignore[arg-type]


def _compact_labels(output: np.ndarray) -> np.ndarray:
    """N,C,H,W scores, or N,H,W class maps already taken from them, as uint8 (uint16 beyond 256 classes)."""
    labels = class_labels(output)
    return labels.astype(np.uint8 if labels.max(initial=0) < 256 else np.uint16)



class PictureKeeper:
    """Keep the `count` inputs where candidates disagree most, offered one batch at a time (module docstring)."""

    def __init__(self, task: TaskEntry, labels: Sequence[str], preprocessing: Preprocessing | None, *,
                 count: int = PICTURED_INPUTS) -> None:
        self.task, self.labels, self.preprocessing, self.count = task, tuple(labels), preprocessing, count
        self._kept: list[tuple[tuple[float, float, int], PicturedInput]] = []

    def offer(self, index: int, x: np.ndarray, reference: np.ndarray, candidates: Sequence[np.ndarray]) -> None:
        """One batch: input tensor N,3,H,W and the task output of the reference and each candidate; `index` is
        the position of the batch's first input in the input set. Segmentation outputs may be given as N,H,W
        class maps instead of scores: the argmax of 21 x 513 x 513 scores takes 50-85 ms here, so a parity
        loop that also feeds classes.DamageAccumulator should take it once and hand both the maps."""
        if len(candidates) != len(self.labels):
            raise ParityError(f"{len(candidates)} candidate outputs for {len(self.labels)} candidates")
        if self.task.labelled:
            ref, cands = _compact_labels(reference), [_compact_labels(c) for c in candidates]
        else:
            ref, cands = saliency_maps(reference, np.float32), [saliency_maps(c, np.float32) for c in candidates]
        for n in range(ref.shape[0]):
            if self.task.labelled:
                scores = tuple(float(np.mean(ref[n] != c[n])) for c in cands)
            else:
                scores = tuple(saliency_disagreement(ref[n], c[n]) for c in cands)
            if not scores or max(scores) <= 0:
                continue
            key = (-max(scores), -float(np.mean(scores)), index + n)
            if len(self._kept) == self.count and key >= self._kept[-1][0]:
                continue
            image = image_from_input(x[n], self.preprocessing)
            kept = PicturedInput(index + n, image, ref[n].copy(), tuple(c[n].copy() for c in cands), scores)
            self._kept = sorted([*self._kept, (key, kept)], key=lambda item: item[0])[:self.count]

    def result(self) -> Pictures:
        return Pictures(task=self.task.name, labels=self.labels,  # type: ignore[arg-type]
                        inputs=tuple(p for _, p in self._kept))
