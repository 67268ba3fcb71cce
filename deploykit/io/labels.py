"""Ground-truth masks for `--labels DIR`: PNG class indices matched to the input images by file name.

A mask is DIR/<image stem>.png (PASCAL VOC's SegmentationClass layout: JPEGImages/2007_000032.jpg ->
SegmentationClass/2007_000032.png), an 8- or 16-bit single-channel or palette PNG whose pixel values are class
indices, 255 meaning "not scored" (metrics.IGNORE_INDEX). Every image must have its mask, checked before
any model runs, so a missing mask fails in a second, not after the candidates ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deploykit.errors import InputError

MASK_MODES = ("L", "P", "I", "I;16")


@dataclass(frozen=True)
class LabelSet:
    """The mask of each input, in input order."""

    folder: Path
    masks: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.masks)

    def read(self, index: int) -> np.ndarray:
        return read_mask(self.masks[index])


def match_labels(folder: str | Path, images: Sequence[str | Path]) -> LabelSet:
    """The mask of each image in `images`, or a clear error naming the first image without one."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"--labels {root}: not a folder; give the folder of ground-truth PNG masks "
                         "(one <image name>.png per input image)")
    if not images:
        raise InputError("--labels needs --inputs DIR, a folder of images whose names the masks share")
    masks = []
    for image in images:
        mask = root / (Path(image).stem + ".png")
        if not mask.is_file():
            raise InputError(f"--labels {root}: no mask {mask.name} for input image {Path(image).name}; every "
                             "input needs <its name>.png of class indices")
        masks.append(mask)
    return LabelSet(root, tuple(masks))


def read_mask(path: Path) -> np.ndarray:
    """H,W int64 class indices from a single-channel or palette PNG."""
    try:
        with Image.open(path) as image:
            if image.mode not in MASK_MODES:
                raise InputError(f"label mask {path} is a {image.mode} image; masks hold one class index per pixel "
                                 "(a single-channel or palette PNG, as PASCAL VOC's SegmentationClass)")
            return np.asarray(image).astype(np.int64)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise InputError(f"cannot read label mask {path}: {exc}") from exc
