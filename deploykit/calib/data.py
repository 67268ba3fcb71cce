"""Calibration data: a list of items (image files, array rows, photograph names, seeds) streamed one at a time.

Sources (`--calib-data`):
- a folder of images, preprocessed by the model's own preprocessing from its ONNX metadata, at its input size;
- an .npy file (memory-mapped) or .npz file of preprocessed N,C,H,W inputs, split along N;
- "photos": the real photographs shipped with scikit-image (a handful; enough for smoke tests);
- "synthetic": standard-normal noise in the model's input space, only when asked for: ranges from noise
  rarely match real images.
Nothing but the current item is held in memory; the fingerprint hashes what the items are, so calibration
caches are invalidated when the data changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deploykit.errors import CalibrationError, InputError
from deploykit.io.digests import sha256_file
from deploykit.io.images import (
    IMAGE_SUFFIXES,
    check_images,
    images_cannot_feed,
    list_images,
    load_inputs,
    preprocess,
    read_image,
    sample_photographs,
)
from deploykit.runner import as_input
from deploykit.types import PIXELS, Preprocessing

Kind = Literal["folder", "array", "photos", "synthetic"]
DEFAULT_CALIB_N = 64  # items used when --calib-n is not given
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "hubble_deep_field")
SYNTHETIC_WARNING = ("calibrating on synthetic noise (--calib-data synthetic): activation ranges from noise rarely "
                     "match real images, so INT8 accuracy will likely suffer; use a folder of real images")


@dataclass(frozen=True)
class CalibrationData:
    """`len(data)` items, streamed by iterating; each item is one 1xCxHxW input of the model's input type
    (float32, or the pixels for a model taking integers: `deploykit.runner.as_input`)."""

    kind: Kind
    source: str
    items: tuple[str, ...]  # file paths, array row numbers, photograph names or seeds
    input_shape: tuple[int, int, int, int]
    preprocessing: Preprocessing | None = None
    # The source's items beyond --calib-n (folders and arrays), never calibrated on: the accuracy budget's
    # preferred held-out inputs (deploykit.precision.passes); not part of the fingerprint.
    spare: tuple[str, ...] = ()
    dtype: str = "float32"  # the model input's NumPy type

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[np.ndarray]:
        dtype = np.dtype(self.dtype)
        if self.kind == "array":
            array = load_inputs(self.source, pixels=_integer(dtype), what="calibration data")
            for item in self.items:
                yield np.ascontiguousarray(as_input(array[int(item) : int(item) + 1], dtype))
            return
        load = self._loader()
        for item in self.items:
            yield as_input(load(item), dtype)

    def _loader(self) -> Callable[[str], np.ndarray]:
        size = (self.input_shape[2], self.input_shape[3])
        if self.kind == "synthetic":
            return lambda seed: np.random.default_rng(int(seed)).standard_normal(self.input_shape).astype(np.float32)
        pre = self.preprocessing
        assert pre is not None
        if self.kind == "photos":
            return lambda name: preprocess(sample_photographs((name,))[0], pre, size)
        return lambda path: preprocess(read_image(Path(path)), pre, size)

    def fingerprint(self) -> str:
        """sha256 over what each item is (file contents for files) and how it becomes a tensor."""
        digest = hashlib.sha256()
        header = {"kind": self.kind, "shape": list(self.input_shape),
                  "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None}
        digest.update(json.dumps(header, sort_keys=True).encode())
        if self.kind == "array":
            digest.update(sha256_file(self.source).encode())
        for item in self.items:
            digest.update(item.encode())
            if self.kind == "folder":
                digest.update(sha256_file(item).encode())
        return digest.hexdigest()

    def split(self, holdout: int) -> tuple[CalibrationData, CalibrationData]:
        """(calibration part, held-out part): the last `holdout` items are held out."""
        count = len(self.items)
        if count < 2:
            raise CalibrationError(f"an accuracy budget needs at least 2 calibration items (one to calibrate on, "
                                   f"one held out), and {self.source} gives {count}; raise --calib-n or add images")
        if not 0 < holdout < count:
            raise CalibrationError(f"--holdout {holdout} leaves none of the {count} calibration items to calibrate "
                                   f"on; give --holdout {count - 1} or less, or more items (--calib-n, more images)")
        return replace(self, items=self.items[:-holdout]), replace(self, items=self.items[-holdout:])

    def spare_part(self, count: int) -> CalibrationData:
        """The first `count` items beyond --calib-n as data of their own (images checked now)."""
        if self.kind == "folder":
            check_images(self.spare[:count])
        return replace(self, items=self.spare[:count], spare=())


def _integer(dtype: np.dtype[Any]) -> bool:
    return bool(np.issubdtype(dtype, np.integer))


def _limit(items: Sequence[str], n: int | None) -> tuple[str, ...]:
    if n is not None and n < 1:
        raise CalibrationError(f"--calib-n {n}: give at least 1")
    return tuple(items[: n if n is not None else DEFAULT_CALIB_N])


def _beyond(items: Sequence[str], n: int | None) -> tuple[str, ...]:
    """The items `_limit` leaves out."""
    return tuple(items[n if n is not None else DEFAULT_CALIB_N:])


def check_spec(text: str) -> None:
    """What --calib-data must be (deploy asks before its export: one image or a model file was refused only
    when the INT8 build started, after the export and the other builds)."""
    path = Path(text)
    if text in ("synthetic", "photos") or path.is_dir() or (path.is_file() and path.suffix in (".npy", ".npz")):
        return
    raise CalibrationError(
        f"--calib-data {text}: not a folder of images ({', '.join(sorted(IMAGE_SUFFIXES))}), an .npy/.npz "
        "file of preprocessed inputs, 'photos' (scikit-image's photographs) or 'synthetic'"
    )


def calibration_data(
    spec: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int, int] | None,
    preprocessing: Preprocessing | None,
    n: int | None = None,
    warn: Callable[[str], None] | None = None,
    dtype: str = "float32",
) -> CalibrationData:
    """Resolve a --calib-data value for a model whose input is of NumPy type `dtype`. Images need the model's
    preprocessing (an integer input without one takes the pixels) and a fixed input shape."""
    text = str(spec)
    integer = _integer(np.dtype(dtype))
    if preprocessing is None and integer:
        preprocessing = PIXELS
    if text == "synthetic":
        if input_shape is None:
            raise CalibrationError("synthetic calibration data needs the model's input size; export with deploykit")
        (warn or (lambda _m: None))(SYNTHETIC_WARNING)
        return CalibrationData("synthetic", "synthetic", _limit([str(i) for i in range(n or 16)], n), input_shape,
                               dtype=dtype)
    path = Path(text)
    if text != "photos" and path.is_file() and path.suffix in (".npy", ".npz"):
        array = load_inputs(path, pixels=integer, what="calibration data")
        if input_shape is not None and array.shape[1] != input_shape[1]:
            raise InputError(f"{path}: inputs of shape {list(array.shape[1:])} (C,H,W), but the model takes "
                             f"{input_shape[1]} channels; save N,{input_shape[1]},H,W preprocessed inputs")
        rows = [str(i) for i in range(array.shape[0])]
        shape = (1, int(array.shape[1]), int(array.shape[2]), int(array.shape[3]))
        return CalibrationData("array", str(path), _limit(rows, n), shape, spare=_beyond(rows, n), dtype=dtype)
    check_spec(text)
    if preprocessing is None or input_shape is None:
        raise CalibrationError(
            f"images in {text} need the model's preprocessing and input size, which this ONNX file does not "
            "carry (it was not exported by deploykit); give --calib-data as an .npz of preprocessed N,C,H,W inputs"
        )
    if input_shape[1] != 3:
        raise images_cannot_feed(f"the model takes {input_shape[1]}-channel inputs", input_shape[1], "--calib-data",
                                 " (or 'synthetic')")
    if text == "photos":
        sample_photographs(("astronaut",))  # fails clearly now, not mid-calibration, without scikit-image
        return CalibrationData("photos", "photos", _limit(PHOTOS, n), input_shape, preprocessing, dtype=dtype)
    files = [str(p) for p in list_images(path)]
    chosen = _limit(files, n)
    check_images(chosen)
    return CalibrationData("folder", str(path), chosen, input_shape, preprocessing, _beyond(files, n), dtype)
