"""Calibration data sources (folder, npz, photos, synthetic on request) and the keyed calibration cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deploykit.calib import cache as calib_cache
from deploykit.calib.data import SYNTHETIC_WARNING, calibration_data
from deploykit.errors import CalibrationError, InputError
from deploykit.types import IMAGENET
from tests.fixtures.precision_models import photo_folder

SHAPE = (1, 3, 24, 32)


def test_folder_streams_preprocessed_images(tmp_path: Path) -> None:
    folder = photo_folder(tmp_path / "photos", count=5)
    data = calibration_data(folder, input_shape=SHAPE, preprocessing=IMAGENET, n=3)
    arrays = list(data)
    assert len(data) == 3 and all(a.shape == SHAPE and a.dtype == np.float32 for a in arrays)
    assert abs(float(np.mean(arrays[0]))) < 3.0 and float(np.std(arrays[0])) > 0.1  # normalised real pixels
    calib, held = calibration_data(folder, input_shape=SHAPE, preprocessing=IMAGENET).split(2)
    assert len(calib) == 3 and len(held) == 2 and not set(calib.items) & set(held.items)
    assert len(data.spare) == 2 and not set(data.spare) & set(data.items)  # the images beyond --calib-n
    beyond = data.spare_part(5)
    assert beyond.items == data.spare and beyond.fingerprint() != data.fingerprint()
    assert data.fingerprint() == calibration_data(folder, input_shape=SHAPE, preprocessing=IMAGENET,
                                                  n=3).fingerprint()


def test_fingerprint_follows_the_data(tmp_path: Path) -> None:
    folder = photo_folder(tmp_path / "photos", count=3)
    first = calibration_data(folder, input_shape=SHAPE, preprocessing=IMAGENET).fingerprint()
    assert first == calibration_data(folder, input_shape=SHAPE, preprocessing=IMAGENET).fingerprint()
    assert first != calibration_data(folder, input_shape=(1, 3, 32, 32), preprocessing=IMAGENET).fingerprint()
    (folder / "calib_00.png").write_bytes((folder / "calib_01.png").read_bytes())  # same name, new content
    assert first != calibration_data(folder, input_shape=SHAPE, preprocessing=IMAGENET).fingerprint()


def test_npz_and_npy(tmp_path: Path) -> None:
    array = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", input=array)
    np.save(tmp_path / "x.npy", array)
    for name in ("x.npz", "x.npy"):
        data = calibration_data(tmp_path / name, input_shape=None, preprocessing=None, n=4)
        rows = list(data)
        assert len(rows) == 4 and np.array_equal(rows[2], array[2:3])
        assert np.array_equal(next(iter(data.spare_part(1))), array[4:5])


def test_synthetic_only_when_asked_and_warns() -> None:
    said: list[str] = []
    data = calibration_data("synthetic", input_shape=SHAPE, preprocessing=None, n=2, warn=said.append)
    assert said == [SYNTHETIC_WARNING] and len(list(data)) == 2


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not a folder of images"):
        calibration_data(tmp_path / "missing", input_shape=SHAPE, preprocessing=IMAGENET)
    with pytest.raises(CalibrationError, match=r"\.npz of preprocessed"):
        calibration_data(photo_folder(tmp_path / "p", count=1), input_shape=SHAPE, preprocessing=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        calibration_data(tmp_path / "empty", input_shape=SHAPE, preprocessing=IMAGENET)
    data = calibration_data("photos", input_shape=SHAPE, preprocessing=IMAGENET, n=1)
    with pytest.raises(CalibrationError, match="at least 2"):
        data.split(1)


def test_cache_roundtrip_and_key_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path))
    key = calib_cache.cache_key("onnx-sha", "data-sha", {"method": "minmax"})
    assert key != calib_cache.cache_key("onnx-sha", "other-data", {"method": "minmax"})
    assert key != calib_cache.cache_key("onnx-sha", "data-sha", {"method": "entropy"})
    path = calib_cache.default_path(key)
    assert path.parent == tmp_path / "calibration"
    ranges = calib_cache.CachedRanges(key, {"minmax": {"a": 1.5}, "entropy": {"a": 1.25}}, {"a": 2.0}, inputs=3)
    calib_cache.store(path, ranges, onnx_sha256="onnx-sha", data_sha256="data-sha", method={"method": "minmax"})
    assert calib_cache.load(path, key) == ranges
    assert calib_cache.load(path, "another-key") is None
    path.write_text("not json")
    assert calib_cache.load(path, key) is None
