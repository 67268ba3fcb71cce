"""An unreadable image fails before the long work, wherever it sits in the folder: every command that reads a
folder of images decodes each one when it resolves its inputs (deploykit.io.images.check_images), not when
calibration, the budget search or parity reach it. Without the check, the 7th image of 7 failed after
calibration had run on the first 6."""

from __future__ import annotations

import io
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deploykit.calib.data import calibration_data
from deploykit.cli import cli
from deploykit.errors import InputError
from deploykit.io.images import check_images, read_image
from deploykit.types import IMAGENET

SHAPE = (1, 3, 32, 32)


def _jpeg(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _float_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.float32), mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


# Each kind of bad file, by the suffix it carries and its bytes (made from a seed and a cut fraction).
BAD = {
    "jpeg cut in its pixel data": (".jpg", lambda seed, cut: _jpeg(seed)[: int(len(_jpeg(seed)) * (0.3 + cut / 2))]),
    "jpeg cut in its header": (".jpg", lambda seed, cut: _jpeg(seed)[: 20 + int(100 * cut)]),
    "png cut short": (".png", lambda seed, cut: _png(seed)[: int(len(_png(seed)) * (0.2 + cut / 2))]),
    "not an image": (".png", lambda seed, cut: b"just text, " * (1 + int(10 * cut))),
    "empty file": (".jpeg", lambda seed, cut: b""),
    "float pixels": (".tif", lambda seed, cut: _float_tiff()),
}


def _folder(root: Path, good: int, bad_at: int, kind: str, seed: int, cut: float) -> Path:
    folder = Path(tempfile.mkdtemp(dir=root))
    names = [f"{i:03d}" for i in range(good + 1)]
    suffix, make = BAD[kind]
    for i, name in enumerate(names):
        if i == bad_at:
            (folder / f"{name}{suffix}").write_bytes(make(seed, cut))
        else:
            (folder / f"{name}.jpg").write_bytes(_jpeg(seed + i))
    return folder


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(good=st.integers(1, 6), where=st.floats(0, 1), kind=st.sampled_from(sorted(BAD)),
       seed=st.integers(0, 1000), cut=st.floats(0, 0.99))
def test_a_bad_image_anywhere_in_the_folder_fails_when_the_data_is_resolved(
        tmp_path: Path, good: int, where: float, kind: str, seed: int, cut: float) -> None:
    bad_at = min(good, int(where * (good + 1)))
    folder = _folder(tmp_path, good, bad_at, kind, seed, cut)
    bad = next(p for p in sorted(folder.iterdir()) if p.name.startswith(f"{bad_at:03d}"))
    with pytest.raises(InputError) as raised:  # before a single item is iterated
        calibration_data(str(folder), input_shape=SHAPE, preprocessing=IMAGENET)
    assert bad.name in str(raised.value)
    with pytest.raises(InputError) as read:  # the check gives the error reading it would give
        read_image(bad)
    assert str(read.value) == str(raised.value)


def test_good_images_of_every_kind_pass_and_read_as_before(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = {"rgb.jpg": Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)),
             "gray.png": Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)),
             "wide.png": Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)),
             "cmyk.jpg": Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).convert("CMYK"),
             "tiny.png": Image.fromarray(rng.integers(0, 255, (1, 1, 3), dtype=np.uint8)),
             "palette.png": Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).convert("P")}
    for name, image in files.items():
        image.save(tmp_path / name)
    check_images(sorted(tmp_path.iterdir()))
    data = calibration_data(str(tmp_path), input_shape=SHAPE, preprocessing=IMAGENET)
    assert len(list(data)) == len(files)


def test_only_the_images_calibration_reads_are_checked(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 4, 4, "not an image", 0, 0.5)  # the 5th of 5, beyond --calib-n 4
    data = calibration_data(str(folder), input_shape=SHAPE, preprocessing=IMAGENET, n=4)
    assert len(list(data)) == 4
    with pytest.raises(InputError, match=r"004\.png"):  # held out for a budget: checked when taken
        data.spare_part(1)


@pytest.mark.parametrize("command", [
    ["build-engine", "{model}", "--int8", "--calib-data", "{folder}", "-o", "{out}/x.onnx"],
    ["parity", "tests.fixtures.user_models:tiny_segmenter", "{model}", "--inputs", "{folder}"],
    ["deploy", "tests.fixtures.user_models:tiny_segmenter", "--input-shape", "1,3,32,32", "--precisions", "fp32,int8",
     "--calib-data", "{folder}", "--out", "{out}"],
    ["deploy", "tests.fixtures.user_models:tiny_segmenter", "--input-shape", "1,3,32,32", "--inputs", "{folder}",
     "--out", "{out}"],
])
def test_the_command_stops_before_its_long_work_and_writes_nothing(
        tmp_path: Path, tiny_onnx: Path, command: list[str]) -> None:
    folder = _folder(tmp_path, 6, 6, "jpeg cut in its pixel data", 3, 0.4)
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(model=tiny_onnx, folder=folder, out=out) for a in command]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("deploykit: error: cannot read image") and "006.jpg" in lines[-1]
    assert not any(re.search(r"calibrat|\d+/\d+", line) for line in lines[:-1]), result.output  # no item was run
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.zoo.sources import load_model

    path = tmp_path_factory.mktemp("model") / "net.onnx"
    loaded = load_model("tests.fixtures.user_models:tiny_segmenter", options={"num_classes": 3}, task="segmentation")
    assert onnx_from_torch(loaded, path, input_shape=(1, 3, 32, 32), simplify=False).passed
    return path
