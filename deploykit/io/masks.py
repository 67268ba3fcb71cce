"""A model's output for one image back at the image's own size: what a server returns for an image input.

Segmentation: the class map (argmax over the class axis at the model's resolution, the first index of tied
maxima as ONNX ArgMax and numpy take it; one channel: score > 0), resized by nearest neighbour so no class
index is invented; uint8 for up to 256 classes, int32 beyond. An output that is a class map already (`--head
argmax`) is only resized. Saliency: the float32 map resized bilinearly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from deploykit.errors import InputError
from deploykit.types import TASKS, Task

UINT8_CLASSES = 256


def mask_dtype(task: Task, num_classes: int) -> np.dtype:
    """What `prediction_at_size` returns for this model: uint8 / int32 class maps, float32 saliency maps."""
    if not TASKS[task].labelled:
        return np.dtype(np.float32)
    return np.dtype(np.uint8 if 0 < num_classes <= UINT8_CLASSES else np.int32)


def prediction_at_size(output: np.ndarray, task: Task, num_classes: int, size: tuple[int, int]) -> np.ndarray:
    """One image's output (C,H,W scores, 1,H,W or H,W) as an (height, width) = `size` map; see the module doc."""
    height, width = size
    if not TASKS[task].labelled:
        plane = output[0] if output.ndim == 3 else output
        if plane.ndim != 2:
            raise InputError(f"a saliency output must be 1,H,W or H,W per image; got {list(output.shape)}")
        resized = Image.fromarray(plane.astype(np.float32)).resize((width, height),
                                                                   Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.float32)
    if output.ndim == 2 and np.issubdtype(output.dtype, np.integer):
        labels = output
    elif output.ndim == 3:
        labels = (output[0] > 0) if output.shape[0] == 1 else np.argmax(output, axis=0)
    else:
        raise InputError(f"a segmentation output must be C,H,W scores or an H,W class map per image; got "
                         f"{list(output.shape)}")
    dtype = mask_dtype(task, num_classes)
    image = Image.fromarray(labels.astype(np.uint8 if dtype == np.uint8 else np.int32))
    return np.asarray(image.resize((width, height), Image.Resampling.NEAREST), dtype=dtype)
