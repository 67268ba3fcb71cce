"""Ground-truth masks for `--labels DIR`: PNG class indices matched to the input images by file name.

A mask is DIR/<image stem>.png (PASCAL VOC's SegmentationClass layout: JPEGImages/2007_000032.jpg ->
SegmentationClass/2007_000032.png), an 8- or 16-bit single-channel or palette PNG whose pixel values are class
indices, 255 meaning "not scored" (IGNORE_INDEX). Every image must have its mask, of its image's size
(as displayed: EXIF orientation applied), checked from the file headers before any model runs, so a missing or
mis-sized mask fails in a second, not after the candidates ran; a class index the model does not have is an
error naming the mask when it is read (`LabelSet.read` with the model's number of classes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import InputError
from deploykit.io.images import image_size, open_image, shown

MASK_MODES = ("L", "P", "I", "I;16")
IGNORE_INDEX = 255  # ground-truth pixels not scored (PASCAL VOC's void outline)


@dataclass(frozen=True)
class LabelSet:
    """The mask of each input, in input order."""

    folder: Path
    masks: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.masks)

    def read(self, index: int, num_classes: int | None = None) -> np.ndarray:
        """The mask of input `index`; with `num_classes`, an InputError naming the mask if it holds a class index
        the model does not have (IGNORE_INDEX apart)."""
        mask = read_mask(self.masks[index])
        if num_classes:
            unknown = np.unique(mask[(mask != IGNORE_INDEX) & ((mask < 0) | (mask >= num_classes))])
            if unknown.size:
                ids = ", ".join(str(int(i)) for i in unknown[:5]) + (" ..." if unknown.size > 5 else "")
                raise InputError(f"--labels {shown(self.folder)}: mask {shown(self.masks[index].name)} holds class "
                                 f"{ids}, but the model has {num_classes} classes (0-{num_classes - 1}; "
                                 f"{IGNORE_INDEX} is ignored): give masks of this model's classes, or map the ids")
        return mask


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
            raise InputError(f"--labels {shown(root)}: no mask {shown(mask.name)} for input image "
                             f"{shown(Path(image).name)}; every input needs <its name>.png of class indices")
        mask_size, image_size_ = image_size(mask, "label mask"), image_size(Path(image))
        if mask_size != image_size_:
            raise InputError(f"--labels {shown(root)}: mask {shown(mask.name)} is {mask_size[1]}x{mask_size[0]}, "
                             f"but its image {shown(Path(image).name)} is {image_size_[1]}x{image_size_[0]}; a "
                             "mask has its image's size (one class index per pixel): give the mask made for it")
        masks.append(mask)
    return LabelSet(root, tuple(masks))


def read_mask(path: Path) -> np.ndarray:
    """H,W int64 class indices from a single-channel or palette PNG (EXIF orientation applied, as to images)."""
    with open_image(path, "label mask") as image:
        if image.mode not in MASK_MODES:
            raise InputError(f"label mask {shown(path)} is a {image.mode} image; masks hold one class index per "
                             "pixel (a single-channel or palette PNG, as PASCAL VOC's SegmentationClass)")
        return np.asarray(image).astype(np.int64)
