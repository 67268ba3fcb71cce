"""Where an accuracy budget's held-out inputs come from (deploykit.precision.passes._split)."""

from __future__ import annotations

from pathlib import Path

from deploykit.calib.data import calibration_data
from deploykit.precision.budget import parse_budget
from deploykit.precision.passes import BEYOND_CALIB_N, LAST_OF_CALIB_N, MAX_HOLDOUT, CalibrationOptions, _split
from deploykit.types import IMAGENET
from tests.fixtures.precision_models import photo_folder

SHAPE = (1, 3, 24, 32)
BUDGET = parse_budget("pixel_agreement>=0.99", "segmentation")


def _data(folder: Path, n: int):  # type: ignore[no-untyped-def]
    return calibration_data(folder, input_shape=SHAPE, preprocessing=IMAGENET, n=n)


def test_the_inputs_beyond_calib_n_are_held_out_and_every_calib_n_input_calibrates(tmp_path: Path) -> None:
    folder = photo_folder(tmp_path / "photos", count=12)
    data = _data(folder, 8)  # 4 beyond; a quarter of 8 is 2
    calib, held, origin = _split(data, CalibrationOptions(), BUDGET)
    assert calib.items == data.items and origin == BEYOND_CALIB_N
    assert held is not None and held.items == data.spare and len(held) == 4
    assert len(_split(_data(folder, 2), CalibrationOptions(), BUDGET)[1] or ()) == MAX_HOLDOUT  # 10 beyond


def test_the_quarter_split_when_too_few_are_beyond_or_holdout_is_given(tmp_path: Path) -> None:
    folder = photo_folder(tmp_path / "photos", count=12)
    data = _data(folder, 11)  # 1 beyond, a quarter of 11 is 2
    calib, held, origin = _split(data, CalibrationOptions(), BUDGET)
    assert held is not None and len(held) == 2 and len(calib) == 9 and origin == LAST_OF_CALIB_N
    calib, held, _ = _split(_data(folder, 8), CalibrationOptions(holdout=3), BUDGET)  # 4 beyond, not used
    assert held is not None and held.items == _data(folder, 8).items[-3:] and len(calib) == 5
    assert _split(data, CalibrationOptions(), None)[1] is None  # no budget: nothing held out
