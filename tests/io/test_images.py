"""Images of every mode PIL opens are read as displayed, or refused by name (issue 18, item 4); label masks of
the wrong size or with class ids the model does not have are errors naming the mask."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deploykit.errors import InputError
from deploykit.io.images import image_size, list_images, read_image
from deploykit.io.labels import match_labels

RNG = np.random.default_rng(0)


def _rgb(height: int = 24, width: int = 40) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_rgb_grayscale_and_la_are_read_as_rgb(tmp_path: Path) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert np.array_equal(read_image(tmp_path / "rgb.png"), rgb)
    gray = rgb[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "l.png")
    assert np.array_equal(read_image(tmp_path / "l.png"), np.stack([gray] * 3, axis=-1))
    Image.fromarray(np.stack([gray, 255 - gray], axis=-1), mode="LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png"), np.stack([gray] * 3, axis=-1))  # alpha dropped
    Image.fromarray(np.dstack([rgb, gray]), mode="RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)


def test_cmyk_is_converted(tmp_path: Path) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    with Image.open(tmp_path / "cmyk.tif") as image:
        assert image.mode == "CMYK"
    assert np.array_equal(read_image(tmp_path / "cmyk.tif"), rgb)


def test_sixteen_bit_samples_are_scaled_not_clipped(tmp_path: Path) -> None:
    wide = RNG.integers(0, 65536, (24, 40), dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I;16")
    got = read_image(tmp_path / "deep.png")
    expected = np.round(wide / 257.0).astype(np.uint8)
    assert got.shape == (24, 40, 3) and np.array_equal(got[..., 1], expected)
    assert got.max() > 200  # clipping 16-bit values to 255 would make almost every pixel white instead


def test_palette_with_transparency_is_read_without_a_warning(tmp_path: Path) -> None:
    palette = Image.new("P", (8, 4))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putdata([0, 1] * 16)
    palette.info["transparency"] = b"\x00\xff"  # index 0 transparent, expressed in bytes
    palette.save(tmp_path / "p.png", transparency=b"\x00\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_image(tmp_path / "p.png")
    assert got[0, 0].tolist() == [255, 0, 0] and got[0, 1].tolist() == [0, 255, 0]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """Orientation 6 means "rotate 90 degrees clockwise to display": the stored 40x24 image is 24x40 on screen."""
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[:12, :20] = 255  # a white block in the stored image's top-left corner
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    got = read_image(tmp_path / "turned.jpg")
    assert got.shape == (40, 24, 3) and image_size(tmp_path / "turned.jpg") == (40, 24)
    shown = np.rot90(stored, k=-1)  # clockwise: the block moves to the top-right corner
    assert np.abs(got.astype(int) - shown.astype(int)).mean() < 3


@pytest.mark.parametrize("kind", ["gif", "apng", "tiff"])
def test_animations_and_multi_page_files_are_refused_by_name(kind: str, tmp_path: Path) -> None:
    frames = [Image.fromarray(_rgb()) for _ in range(3)]
    suffix = {"gif": ".gif", "apng": ".png", "tiff": ".tif"}[kind]
    path = tmp_path / f"moving{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match=r"moving\.\w+ has 3 frames"):
        read_image(path)


@pytest.mark.parametrize("mode, says", [("I", "32-bit integer"), ("F", "32-bit float")])
def test_pixels_of_unstated_range_are_refused_by_name(mode: str, says: str, tmp_path: Path) -> None:
    array = RNG.standard_normal((8, 8)).astype(np.float32) if mode == "F" else RNG.integers(0, 1 << 20, (8, 8))
    Image.fromarray(array.astype(np.int32) if mode == "I" else array, mode=mode).save(tmp_path / "wide.tif")
    with pytest.raises(InputError, match=f"wide.tif has {says} pixels"):
        read_image(tmp_path / "wide.tif")


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims side x side pixels (400 M at 20000): PIL refuses it before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bombs_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"huge\.png is too large to decode safely"):
        read_image(bomb_png(tmp_path / "huge.png"))
    with pytest.raises(InputError, match=r"large\.png is too large to decode safely"):  # PIL only warns here
        read_image(bomb_png(tmp_path / "large.png", side=10000))


def test_names_that_are_not_utf8_are_refused_by_name(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "fine.png")
    Image.fromarray(_rgb()).save(os.fsencode(tmp_path) + b"/caf\xe9.png")
    with pytest.raises(InputError, match=r"caf\\udce9\.png is not valid UTF-8"):
        list_images(tmp_path)


def _labelled(tmp_path: Path, mask: np.ndarray, image_shape: tuple[int, int] = (24, 40)) -> tuple[Path, Path]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(_rgb(*image_shape)).save(images / "a.png")
    Image.fromarray(mask.astype(np.uint8), mode="L").save(labels / "a.png")
    return images / "a.png", labels


def test_masks_of_another_size_than_their_image_are_refused(tmp_path: Path) -> None:
    image, labels = _labelled(tmp_path, np.zeros((12, 20)))
    with pytest.raises(InputError, match=r"mask a\.png is 20x12, but its image a\.png is 40x24"):
        match_labels(labels, [image])


def test_class_ids_the_model_does_not_have_are_refused_and_255_is_ignored(tmp_path: Path) -> None:
    mask = np.zeros((24, 40))
    mask[0, :3] = [1, 255, 7]
    image, labels = _labelled(tmp_path, mask)
    found = match_labels(labels, [image])
    with pytest.raises(InputError, match=r"mask a\.png holds class 7, but the model has 3 classes \(0-2; 255 is"):
        found.read(0, num_classes=3)
    assert found.read(0, num_classes=8)[0, :3].tolist() == [1, 255, 7]
    mask[0, 2] = 2
    image.unlink()
    (labels / "a.png").unlink()
    (tmp_path / "images").rmdir()
    (tmp_path / "labels").rmdir()
    image, labels = _labelled(tmp_path, mask)
    assert match_labels(labels, [image]).read(0, num_classes=3)[0, 1] == 255  # ignored, not an unknown class


def test_links_to_nowhere_are_refused_by_name_and_links_to_images_are_read(tmp_path: Path) -> None:
    """A dangling link among the images was skipped without a word: calibration ran on fewer images than given."""
    photo = tmp_path / "elsewhere" / "b.png"
    photo.parent.mkdir()
    Image.new("RGB", (8, 8)).save(photo)
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").symlink_to(photo)
    assert [p.name for p in list_images(folder)] == ["a.png"]
    (folder / "c.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputError, match=r"holds 1 link\(s\) to files that do not exist \(.*c\.png\); restore"):
        list_images(folder)


@pytest.mark.parametrize("make", [
    lambda path: os.mkfifo(path),  # opening it blocks until a writer comes
    lambda path: path.symlink_to("/dev/zero"),  # reading it never ends
])
def test_a_fifo_or_device_named_like_an_image_is_refused_by_name(tmp_path: Path, make: Any) -> None:
    """Such a file was skipped without a word (calibration and parity ran on fewer images than the folder
    names), and alone it made the folder "hold no images"; a folder named like an image is a folder, read."""
    folder = tmp_path / "images"
    (folder / "sub.png").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "sub.png" / "a.png")
    assert [p.name for p in list_images(folder)] == ["a.png"]
    make(folder / "x.png")
    with pytest.raises(InputError, match=r"holds 1 file\(s\) named like images that are not regular files .*x\.png"):
        list_images(folder)
