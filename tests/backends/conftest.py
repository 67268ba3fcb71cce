"""Fixtures for the TensorRT tests: the tensorrt double (tests/fakes) and a tiny exported model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.fixtures import trt_double, trt_double_no_gpu

__all__ = ["tiny_onnx", "trt_double", "trt_double_no_gpu"]

TINY = "tests.fixtures.user_models:tiny_segmenter"


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_segmenter exported by deploykit (dynamic batch/height/width, metadata input size 64x64)."""
    from deploykit.export import onnx_from_torch
    from deploykit.zoo.sources import load_model

    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    result = onnx_from_torch(load_model(TINY), path, input_shape=(1, 3, 64, 64), simplify=False)
    assert result.passed
    return path
