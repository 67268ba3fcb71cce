"""The inputs of a parity run: an image folder, an .npz, random tensors, or by default real photographs.

Input size, in order: --input-shape; a target whose ONNX input has fixed height and width; the input size in
an ONNX model's or artifact's metadata (the size it was exported and verified at); a PyTorch model's default
size (zoo spec). Images are preprocessed with the first known
preprocessing (reference first); an ONNX file without deploykit metadata has none, and then ImageNet's
mean/std is assumed and said so. Inputs are streamed one batch at a time, so memory does not grow with a folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import InputError
from deploykit.io.images import (
    IMAGE_SUFFIXES,
    check_images,
    images_cannot_feed,
    iter_folder,
    list_images,
    preprocess,
    random_inputs,
    read_npz,
    sample_photographs,
)
from deploykit.io.model_files import require_one_input
from deploykit.runner import Target
from deploykit.types import IMAGENET, PIXELS, Preprocessing

RANDOM_TOO = " (parity also takes --random N)"
SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@dataclass
class InputSet:
    description: str
    count: int
    shape: tuple[int, ...]  # of one batch
    batches: Callable[[], Iterator[np.ndarray]]
    files: tuple[str, ...] = ()  # the image file of each input, when every input is one (--labels matches them)


def _image_size(targets: Sequence[Target], input_shape: tuple[int, ...] | None) -> tuple[int, int]:
    """Height and width for photographs, which always have 3 channels and come one at a time."""
    if input_shape is not None and input_shape[1] != 3:
        raise images_cannot_feed(f"--input-shape has {input_shape[1]} channels", input_shape[1], "--inputs", RANDOM_TOO)
    other = next(((t.label, t.channels) for t in targets if t.channels is not None and t.channels != 3), None)
    if other is not None:
        raise images_cannot_feed(f"{other[0]} takes {other[1]}-channel inputs", other[1], "--inputs", RANDOM_TOO)
    return _spatial_size(targets, input_shape)


def _spatial_size(targets: Sequence[Target], input_shape: tuple[int, ...] | None) -> tuple[int, int]:
    if input_shape is not None:
        return int(input_shape[2]), int(input_shape[3])
    for target in targets:
        if target.static_input is not None and len(target.static_input) == 4:
            return int(target.static_input[2]), int(target.static_input[3])
    # An exported model records the size it was verified at; a PyTorch model's spec only has a default.
    for target in sorted(targets, key=lambda t: t.loaded is not None):
        if target.input_size is not None:
            return target.input_size
    raise InputError("no target says what input size it takes (ONNX without metadata and dynamic shapes); "
                     "give --input-shape N,C,H,W")


def _preprocessing(targets: Sequence[Target]) -> tuple[Preprocessing, str]:
    for target in targets:
        if target.preprocessing is not None:
            return target.preprocessing, f"preprocessed as {target.label} expects"
    integer = next((t for t in targets if t.integer_input), None)
    if integer is not None:  # ImageNet-normalised floats cast to integers would be noise
        return PIXELS, (f"as pixels in [0, 255] ({integer.label} takes an integer input; no target records its "
                        "preprocessing)")
    return IMAGENET, "preprocessed with ImageNet mean/std (no target records its preprocessing)"


def _batch_shape(targets: Sequence[Target], input_shape: tuple[int, ...] | None, size: tuple[int, int]) -> tuple[
        int, ...]:
    if input_shape is not None:
        return tuple(input_shape)
    static = next((t.static_input for t in targets if t.static_input is not None and len(t.static_input) == 4), None)
    channels = next((t.channels for t in targets if t.channels is not None), 3)
    return (static[0] if static else 1, static[1] if static else channels, *size)


# description, count, shape, make, the image file of each input (empty unless all are)
Part = tuple[str, int, tuple[int, ...], Callable[[], Iterator[np.ndarray]], tuple[str, ...]]


def resolve_inputs(
    targets: Sequence[Target],
    *,
    inputs: str | None = None,
    random: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> InputSet:
    """The inputs for `targets` (reference first); see the module docstring for the precedence."""
    for target in targets:
        require_one_input(target.label, [spec.name for spec in target.runner.input_specs()], "parity")
    parts: list[Part] = []
    fixed = next((t for t in targets if t.channels is not None), None)
    if input_shape is not None and len(input_shape) == 4 and fixed is not None and input_shape[1] != fixed.channels:
        raise InputError(f"--input-shape has {input_shape[1]} channels, but {fixed.label} takes {fixed.channels}; "
                         f"give N,{fixed.channels},H,W")
    if inputs is not None:
        parts.append(_given_inputs(targets, Path(inputs), input_shape, limit))
    if random:
        shape = _batch_shape(targets, input_shape, _spatial_size(targets, input_shape))
        count = random
        parts.append((f"{count} random normal tensors of shape {'x'.join(map(str, shape))} (seed {seed})", count,
                      shape, lambda: iter(random_inputs(shape, count, seed)), ()))  # type: ignore[arg-type]
    if not parts:
        parts.append(_sample_photographs(targets, input_shape, limit))

    def batches() -> Iterator[np.ndarray]:
        for part in parts:
            yield from part[3]()

    files = parts[0][4] if len(parts) == 1 else ()
    return InputSet(description="; ".join(p[0] for p in parts), count=sum(p[1] for p in parts),
                    shape=parts[0][2], batches=batches, files=files)


def check_given(path: Path) -> None:
    """What --inputs must be: an .npz/.npy file or a folder of images (deploy asks before its export: one image,
    or a model file, was refused only when parity started, after the export and the builds)."""
    if not path.exists():
        raise InputError(f"--inputs {path} does not exist; give a folder of images or an .npz/.npy file")
    if path.suffix.lower() in IMAGE_SUFFIXES and not path.is_dir():
        raise InputError(f"--inputs {path}: give a folder of images or an .npz/.npy file, not one image")
    if not path.is_dir() and path.suffix.lower() not in (".npz", ".npy"):
        raise InputError(f"--inputs {path} is neither a folder of images nor an .npz/.npy file; give one of those")


def _given_inputs(targets: Sequence[Target], path: Path, input_shape: tuple[int, ...] | None,
                  limit: int | None) -> Part:
    check_given(path)
    if path.suffix.lower() in (".npz", ".npy"):
        arrays = read_npz(path, targets[0].input_name)[:limit]
        if not arrays:
            raise InputError(f"{path} holds no inputs")
        return f"{len(arrays)} inputs from {path.name}", len(arrays), arrays[0].shape, lambda: iter(arrays), ()
    size = _image_size(targets, input_shape)
    pre, how = _preprocessing(targets)
    files = list_images(path)[:limit]
    check_images(files)
    return (f"{len(files)} images from {path} at {size[0]}x{size[1]}, {how}", len(files), (1, 3, *size),
            lambda: iter_folder(path, pre, size, limit), tuple(str(f) for f in files))


def _sample_photographs(targets: Sequence[Target], input_shape: tuple[int, ...] | None, limit: int | None) -> Part:
    size = _image_size(targets, input_shape)
    pre, how = _preprocessing(targets)
    names = SAMPLE_PHOTOS[:limit]
    photos = sample_photographs(names)
    description = (f"no --inputs given: {len(names)} scikit-image sample photographs ({', '.join(names)}) "
                   f"at {size[0]}x{size[1]}, {how}")
    return (description, len(photos), (1, 3, *size), lambda: (preprocess(photo, pre, size) for photo in photos),
            ())
