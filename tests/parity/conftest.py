"""Exported models shared by the parity tests: the tiny zoo DeepLabv3+ (MobileNetV2) and the user fixture model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.images import preprocess, sample_photographs
from deploykit.targets.resolve import open_target
from deploykit.zoo import get_model_spec
from tests.fixtures.tiny import TINY
from tests.parity.helpers import USER_MODEL, ZOO_MODEL, zoo_target


@pytest.fixture(scope="session")
def zoo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny zoo model exported by deploykit (no onnxslim: keeps the test fast and every node distinct)."""
    target = zoo_target()
    assert target.loaded is not None
    path = tmp_path_factory.mktemp("zoo") / f"{ZOO_MODEL}.onnx"
    size = TINY[get_model_spec(ZOO_MODEL).name].input_size
    result = onnx_from_torch(target.loaded, path, input_shape=(1, 3, *size), simplify=False)
    assert result.passed
    return path


@pytest.fixture(scope="session")
def user_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = open_target(USER_MODEL)
    assert target.loaded is not None
    path = tmp_path_factory.mktemp("user") / "tiny.onnx"
    assert onnx_from_torch(target.loaded, path, input_shape=(1, 3, 64, 64), simplify=False).passed
    return path


@pytest.fixture(scope="session")
def astronaut_65() -> np.ndarray:
    """The astronaut photograph preprocessed for the tiny zoo model."""
    spec = get_model_spec(ZOO_MODEL)
    return preprocess(sample_photographs(("astronaut",))[0], spec.preprocessing, TINY[spec.name].input_size)
