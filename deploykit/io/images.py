"""Images in, model inputs out: reading folders and .npz files, and the model's own preprocessing.

Image files are read as HxWx3 8-bit RGB the way they are displayed: EXIF orientation applied, 16-bit samples
scaled to 8 bits (not clipped), grayscale repeated to three channels, palette colours looked up, CMYK converted,
alpha dropped (the colours as stored). What has no single right reading is refused by name: animations and
multi-page files (which frame?), 32-bit integer and float pixels (what range?), images beyond PIL's
decompression-bomb limit, and file names that are not valid UTF-8.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deploykit.errors import InputError, first_line, optional_import
from deploykit.io.std_streams import undecodable
from deploykit.types import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif"}
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
NO_RANGE = {"I": "32-bit integer", "F": "32-bit float"}  # modes whose sample range a file does not state
TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def shown(path: str | os.PathLike[str]) -> str:
    """A path as a message can print it: bytes that are not UTF-8 written as escapes."""
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


def check_name(path: str | os.PathLike[str], what: str = "file") -> None:
    """InputError for a file name that cannot go into JSON or reports (deploykit.io.std_streams.undecodable)."""
    why = undecodable(os.fsdecode(path))
    if why is not None:
        raise InputError(f"{what} {shown(path)} {why}")


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


def _listed(paths: list[Path]) -> str:
    """The first three of `paths`, shown, and "..." for more."""
    return ", ".join(shown(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"image folder {shown(root)} does not exist")
    named = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    # a link to nowhere was skipped without a word: calibration or parity then ran on fewer images than given
    if dangling := [p for p in named if p.is_symlink() and not p.exists()]:
        raise InputError(f"{shown(root)} holds {len(dangling)} link(s) to files that do not exist "
                         f"({_listed(dangling)}); restore their targets or remove the links")
    # a FIFO or a device named like an image was skipped without a word too (opening one would block or never end)
    if special := [p for p in named if p.exists() and not p.is_file() and not p.is_dir()]:
        raise InputError(f"{shown(root)} holds {len(special)} file(s) named like images that are not regular files "
                         f"(a FIFO, socket or device: {_listed(special)}); remove them or put the images in their "
                         "place")
    files = [p for p in named if p.is_file()]
    if not files:
        raise InputError(f"{shown(root)} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); point at a folder "
                         "of photos")
    for file in files:
        check_name(file, "image")
    return files


@contextmanager
def open_image(path: Path | io.BytesIO, what: str = "image", *, draft: bool = False) -> Iterator[Image.Image]:
    """The image at `path` (or encoded bytes in a BytesIO, which `what` then names), single-frame and
    EXIF-oriented, or an InputError naming the file and the reason, also for a decoding error in the caller's
    block. draft: a JPEG decodes at 1/8 scale (only for checking it)."""
    named = _named(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, not merely warned about
            with Image.open(path) as image:
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    raise InputError(f"{named} has {frames} frames (an animation or a multi-page file); give "
                                     "single-frame images, e.g. the frame you mean saved as PNG")
                if draft:
                    image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                yield ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{named} is too large to decode safely ({exc}); give images of a usual size (resize "
                         "it first)") from None
    except UnidentifiedImageError:
        raise InputError(f"cannot read {named}: not a PNG, JPEG or other format Pillow decodes") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt files
        raise InputError(f"cannot read {named}: {exc}") from exc


def _named(path: Path | io.BytesIO, what: str) -> str:
    """How messages name an image: `what` and the file (its name checked), or `what` alone for bytes."""
    if isinstance(path, io.BytesIO):
        return what
    check_name(path, what)
    return f"{what} {shown(path)}"


def image_size(path: Path, what: str = "image") -> tuple[int, int]:
    """(height, width) as displayed (EXIF orientation applied), read from the header, not the pixels."""
    check_name(path, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size alone is harmless
            with Image.open(path) as image:
                width, height = image.size
                turned = image.getexif().get(0x0112) in TRANSPOSED
    except (Image.DecompressionBombError, OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {what} {shown(path)}: {exc}") from exc
    return (width, height) if turned else (height, width)


def read_image(path: Path | io.BytesIO, what: str = "image") -> np.ndarray:
    """HxWx3 uint8 RGB as the image is displayed (module docstring); `what` names it in errors."""
    with open_image(path, what) as image:
        _check_range(image, path, what)
        if image.mode in SIXTEEN_BIT:
            wide = np.asarray(image).astype(np.uint32)
            gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
            return np.stack([gray] * 3, axis=-1)
        if image.mode == "P" and "transparency" in image.info:  # through RGBA, as PIL asks: no warning printed
            image = image.convert("RGBA")
        return np.asarray(image.convert("RGB"))


def images_cannot_feed(subject: str, channels: int, flag: str, extra: str = "") -> InputError:
    """The error for images given to a model whose input is not RGB (`subject` says whose channel count):
    images are read as 3-channel RGB, so such a model takes arrays of its own channel count."""
    return InputError(f"{subject}, but images are read as 3-channel RGB; give {flag} as an .npz/.npy of "
                      f"preprocessed N,{channels},H,W inputs{extra}")


def check_images(paths: Iterable[str | os.PathLike[str]], what: str = "image") -> None:
    """Decode every image now (JPEGs at 1/8 scale, which still reads every byte), so that an unreadable file
    fails before the long work that reads it in turn, with the error read_image would give."""
    for path in paths:
        with open_image(Path(path), what, draft=True) as image:
            _check_range(image, path, what)
            image.load()


def _check_range(image: Image.Image, path: str | os.PathLike[str] | io.BytesIO, what: str) -> None:
    if image.mode in NO_RANGE:
        named = _named(path if isinstance(path, io.BytesIO) else Path(path), what)
        raise InputError(f"{named} has {NO_RANGE[image.mode]} pixels, whose range the file does not state; save "
                         "it as 8- or 16-bit")


def decode_image(data: bytes, max_bytes: int | None = None) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) as HxWx3 uint8 RGB (a server's image input), read as read_image
    reads files; at most `max_bytes` of them."""
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"the image has {len(data)} bytes; this server takes at most {max_bytes}")
    if not data:
        raise InputError("the image is empty (0 bytes)")
    return read_image(io.BytesIO(data), what=f"image of {len(data)} bytes")


def iter_folder(
    folder: str | os.PathLike[str], pre: Preprocessing, size: tuple[int, int], limit: int | None = None
) -> Iterator[np.ndarray]:
    """Stream preprocessed images one at a time (memory does not grow with the folder)."""
    for path in list_images(folder)[:limit]:
        yield preprocess(read_image(path), pre, size)


def read_npz(path: str | os.PathLike[str], input_name: str) -> list[np.ndarray]:
    """Batches from an .npz/.npy (load_inputs), split along axis 0."""
    array = load_inputs(path, input_name)
    return [array[i : i + 1].astype(np.float32) for i in range(array.shape[0])]


SAVE_INPUTS = "save a float32 N,C,H,W array with np.save(FILE.npy, x) or np.savez(FILE.npz, input=x)"


def read_arrays(path: str | os.PathLike[str], what: str = "input file",
                fix: str = SAVE_INPUTS) -> dict[str, np.ndarray]:
    """Every array of an .npz by name, or an .npy's one array (memory-mapped: not read whole) under the name "",
    whichever the bytes are, whatever the name ends in: the one reader of array files. No pickles: object arrays
    are refused, as they would run code. Errors name the file as `what` and end with how to `fix` it."""
    file = Path(path)
    if not file.is_file():
        problem = ("is a folder" if file.is_dir() else "is not a regular file (a FIFO or device)" if file.exists()
                   else "does not exist")
        raise InputError(f"{what} {shown(file)} {problem}; {fix}")
    try:
        loaded = np.load(file, mmap_mode="r", allow_pickle=False)  # an .npz ignores mmap_mode
        if isinstance(loaded, np.ndarray):
            return {"": loaded}
        with loaded:
            return {name: np.asarray(loaded[name]) for name in loaded.files}  # reads each: object arrays fail here
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # pickled objects, a truncated file, ...
        raise InputError(f"cannot read {what} {shown(file)} ({first_line(exc)}); {fix}") from None


def load_inputs(path: str | os.PathLike[str], input_name: str | None = None, *, pixels: bool = False,
                what: str = "input file") -> np.ndarray:
    """The checked N,C,H,W inputs (checked_inputs) of an array file (read_arrays): the array named `input_name`,
    or its only array. Calibration and parity read them alike; `what` names the file in errors."""
    file = Path(path)
    arrays = read_arrays(file, what)
    if input_name in arrays:
        return checked_inputs(arrays[input_name], file, pixels=pixels)
    if len(arrays) != 1:
        named = f"name one {input_name!r} or keep just one" if input_name else "keep just one (the model input)"
        raise InputError(f"{shown(file)} holds arrays {list(arrays)}; {named}")
    return checked_inputs(next(iter(arrays.values())), file, pixels=pixels)


def checked_inputs(array: np.ndarray, file: Path, *, pixels: bool = False) -> np.ndarray:
    """`array` if it holds preprocessed N,C,H,W float inputs (at least one, every value finite), else an
    InputError naming what is wrong with `file`; with `pixels` (a model taking integers), integer pixels too.
    Checked in slices: a memory-mapped .npy is not read whole."""
    if array.ndim != 4:
        raise InputError(f"{file}: array of shape {list(array.shape)}; expected preprocessed N,C,H,W inputs")
    if not np.issubdtype(array.dtype, np.floating) and not (pixels and np.issubdtype(array.dtype, np.integer)):
        raise InputError(f"{file} holds {array.dtype} values; inputs are preprocessed float tensors (normalised as "
                         "the model expects), not raw pixels: save float32, or give a folder of images")
    if array.shape[0] == 0:
        raise InputError(f"{file} holds no inputs (shape {list(array.shape)})")
    for start in range(array.shape[0]):
        if not np.isfinite(array[start]).all():
            raise InputError(f"{file}: input {start} holds NaN or infinite values; inputs must be finite: check the "
                             "preprocessing that saved them")
    return array


def sample_photographs(names: Sequence[str] = ("astronaut", "coffee", "chelsea", "rocket")) -> list[np.ndarray]:
    """Real photographs shipped with scikit-image (the `images` extra), as HxWx3 uint8 RGB."""
    data = optional_import("skimage.data", "sample photographs", "pip install 'deploykit[images]'", "scikit-image")
    return [np.asarray(getattr(data, name)())[..., :3] for name in names]


def random_inputs(shape: tuple[int, int, int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]
