"""Images in, model inputs out: reading folders and .npz files, and the model's own preprocessing."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deploykit.errors import InputError
from deploykit.types import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}


def preprocess(rgb: np.ndarray, pre: Preprocessing, size: tuple[int, int]) -> np.ndarray:
    """One HxWx3 uint8 RGB image -> a 1x3xHxW float32 tensor at `size` (height, width), bilinear resize."""
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    image = Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8))
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    x = np.asarray(image, dtype=np.float32) / 255.0
    low, high = pre.input_range
    x = (x * (high - low) + low).astype(np.float32)
    if pre.channel_order == "BGR":
        x = x[..., ::-1]
    mean, std = np.asarray(pre.mean, np.float32), np.asarray(pre.std, np.float32)
    normalised = (x - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[None], dtype=np.float32)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); point at a folder of photos")
    return files


def read_image(path: Path | io.BytesIO, what: str = "") -> np.ndarray:
    """An image file (or encoded bytes in a BytesIO) as HxWx3 uint8 RGB; `what` names it in the error."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {what or path}: not a PNG, JPEG or other format Pillow decodes") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt files
        raise InputError(f"cannot read image {what or path}: {exc}") from exc


def decode_image(data: bytes, max_bytes: int | None = None) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) as HxWx3 uint8 RGB (a server's image input); at most
    `max_bytes` of them, and no decompression bomb (Pillow's pixel limit)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"the image has {len(data)} bytes; this server takes at most {max_bytes}")
    if not data:
        raise InputError("the image is empty (0 bytes)")
    return read_image(io.BytesIO(data), what=f"of {len(data)} bytes")


def iter_folder(
    folder: str | os.PathLike[str], pre: Preprocessing, size: tuple[int, int], limit: int | None = None
) -> Iterator[np.ndarray]:
    """Stream preprocessed images one at a time (memory does not grow with the folder)."""
    for path in list_images(folder)[:limit]:
        yield preprocess(read_image(path), pre, size)


def read_npz(path: str | os.PathLike[str], input_name: str) -> list[np.ndarray]:
    """Batches from an .npz/.npy: the array named like the input, or the only array; split along axis 0."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"input file {file} does not exist")
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read {file}: {exc}") from exc
    if isinstance(loaded, np.ndarray):
        array = loaded
    else:
        names = list(loaded.keys())
        if input_name not in names and len(names) != 1:
            raise InputError(f"{file} holds arrays {names}; name one {input_name!r} or keep just one")
        array = loaded[input_name if input_name in names else names[0]]
    if array.ndim != 4:
        raise InputError(f"{file}: array of shape {list(array.shape)}; expected N,C,H,W")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{file} holds {array.dtype} values; inputs are preprocessed float tensors, not raw pixels "
                         "(save float32, or give a folder of images)")
    return [array[i : i + 1].astype(np.float32) for i in range(array.shape[0])]


def sample_photographs(names: Sequence[str] = ("astronaut", "coffee", "chelsea", "rocket")) -> list[np.ndarray]:
    """Real photographs shipped with scikit-image (the `images` extra), as HxWx3 uint8 RGB."""
    try:
        from skimage import data
    except ImportError as exc:
        raise InputError("sample photographs need scikit-image: pip install 'deploykit[images]'") from exc
    return [np.asarray(getattr(data, name)())[..., :3] for name in names]


def random_inputs(shape: tuple[int, int, int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]
