"""Core types every layer shares: the task a model solves and how pixels become its input.

They live here, not in the zoo, so metadata, images and calibration can use them without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Task = Literal["segmentation", "saliency"]  # the names of TASKS, for type checking


@dataclass(frozen=True)
class Preprocessing:
    """How raw RGB pixels in [0, 255] become the model's input tensor.

    x = (pixels / 255 * (input_range[1] - input_range[0]) + input_range[0]), channels reordered to
    `channel_order`, then (x - mean) / std per channel (mean/std in that same channel order).
    """

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    input_range: tuple[float, float] = (0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """From to_dict's form; a ValueError (or KeyError) says what does not fit: three finite means and
        non-zero stds, RGB or BGR, an input range low < high."""
        mean, std = _floats(data["mean"], 3, "mean"), _floats(data["std"], 3, "std")
        low, high = _floats(data["input_range"], 2, "input_range")
        if 0.0 in std or not low < high or data["channel_order"] not in ("RGB", "BGR"):
            raise ValueError("std must be non-zero, input_range low < high and channel_order RGB or BGR")
        return cls(mean=mean, std=std, channel_order=data["channel_order"],
                   input_range=(low, high))


def _floats(values: Any, count: int, what: str) -> Any:
    """`count` finite floats from a JSON list, as a tuple."""
    numbers = tuple(float(v) for v in values) if isinstance(values, (list, tuple)) else ()
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{what} must be {count} finite numbers")
    return numbers


IMAGENET = Preprocessing()
# What a model with an integer input (uint8 pixels) and no recorded preprocessing takes: the pixels themselves
# (it normalises inside, or works on the integers)
PIXELS = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_range=(0.0, 255.0))


def _fits_segmentation(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4


def _fits_saliency(shape: tuple[int, ...]) -> bool:
    return (len(shape) == 4 and shape[1] == 1) or len(shape) == 3


@dataclass(frozen=True)
class TaskEntry:
    """One task: which outputs are its predictions, and whether they are class scores (labelled: argmax label
    maps, class maps from --head argmax, per-class damage, ground-truth masks) or maps drawn as they are."""

    name: str
    fits: Callable[[tuple[int, ...]], bool]  # an output of this shape is the task's prediction
    labelled: bool


# The one task table (Task above names the same for type checking); code asks an entry, never a name. It sits
# here, at the bottom, so that every layer (io's masks for a server, metrics, parity, reports) can ask it.
TASKS: dict[str, TaskEntry] = {t.name: t for t in (
    TaskEntry("segmentation", _fits_segmentation, labelled=True),
    TaskEntry("saliency", _fits_saliency, labelled=False),
)}
LABELLED = next(t for t in TASKS.values() if t.labelled)  # what a class map is a prediction of


@dataclass(frozen=True)
class Progressed:
    """A counted step of long work: `done` of `total` units of `what` are finished (the CLI draws a bar)."""

    what: str
    done: int
    total: int

    def __str__(self) -> str:  # how plain-text progress (benchmarks, logs) shows a count
        return f"{self.what} {self.done}/{self.total}"


# What long-running library functions report: a str is a one-line status message, a Progressed a count.
ProgressEvent = str | Progressed
Progress = Callable[[ProgressEvent], None]
