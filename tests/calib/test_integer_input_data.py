"""Calibration data for a model that takes integer pixels (uint8, no deploykit metadata): every item is fed as
the model takes it (deploykit.runner.as_input, the conversion parity uses), so INT8 builds of such a model
calibrate on its pixels instead of ONNX Runtime refusing float32 (exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto
from PIL import Image

from deploykit.calib.data import calibration_data
from deploykit.cli import cli
from deploykit.errors import InputError
from tests.fixtures.pixel_models import pixel_images, pixel_model

SHAPE = (1, 3, 24, 32)


def test_images_for_an_integer_input_are_their_pixels(tmp_path: Path) -> None:
    folder = pixel_images(tmp_path / "images", 2)
    items = list(calibration_data(folder, input_shape=SHAPE, preprocessing=None, dtype="uint8"))
    pixels = [np.asarray(Image.open(p)).transpose(2, 0, 1)[None] for p in sorted(folder.iterdir())]
    assert all(i.dtype == np.uint8 for i in items)
    assert all(np.array_equal(i, p) for i, p in zip(items, pixels, strict=True))


def test_arrays_for_an_integer_input_take_pixels_rounded_or_as_integers(tmp_path: Path) -> None:
    rows = np.array([[[[254.99998, 0.4]]], [[[1e6, -3.0]]]], dtype=np.float32)  # N,C,H,W = 2,1,1,2
    np.save(tmp_path / "floats.npy", rows)
    np.save(tmp_path / "pixels.npy", rows.clip(0, 255).round().astype(np.uint8))
    for name in ("floats.npy", "pixels.npy"):
        items = list(calibration_data(tmp_path / name, input_shape=None, preprocessing=None, dtype="uint8"))
        assert [i.ravel().tolist() for i in items] == [[255, 0], [255, 0]], name
    with pytest.raises(InputError, match="holds uint8 values"):  # a float model still wants preprocessed floats
        calibration_data(tmp_path / "pixels.npy", input_shape=None, preprocessing=None)


def test_an_int8_build_of_a_uint8_input_model_calibrates_and_searches_on_its_pixels(tmp_path: Path) -> None:
    model = pixel_model(tmp_path / "pixels.onnx", TensorProto.UINT8, dims=SHAPE)
    images = pixel_images(tmp_path / "images", 4)
    runner = CliRunner()
    built = runner.invoke(cli, ["build-engine", str(model), "--int8", "--calib-data", str(images),
                                "--accuracy-budget", "cosine>=0.999",  # the budget search runs it too
                                "-o", str(tmp_path / "pixels.int8.onnx")])
    assert built.exit_code == 0, built.output
    checked = runner.invoke(cli, ["parity", str(model), str(tmp_path / "pixels.int8.onnx"), "--inputs", str(images),
                                  "--task", "segmentation", "--json"])
    assert checked.exit_code == 0, checked.output  # ranges of real pixels: the INT8 artifact passes its gates
    assert json.loads(checked.stdout)["candidates"][0]["precision"] == "int8"
