"""Installing the tensorrt double: `sys.modules["tensorrt"]` becomes the double and deploykit's device layer
becomes the CPU fake sharing its memory; and the tiny exported model the backend and target tests share. Imported
by tests/backends/conftest.py and tests/targets/conftest.py."""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploykit.backends import base as backends_base
from deploykit.backends.base import forget_availability
from deploykit.backends.tensorrt import device as trt_device
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.zoo.sources import load_model
from tests.fakes.device import FakeDevice, FakeMemory
from tests.fakes.tensorrt_double import (
    DEFAULT_GPU,
    DoubleState,
    SimulatedGpu,
    TensorRTDeprecationWarning,
    make_tensorrt,
    set_version,
)


@dataclass
class TrtDouble:
    module: types.ModuleType
    device: FakeDevice
    profile: str

    @property
    def state(self) -> DoubleState:
        return self.module._double_state  # type: ignore[no-any-return]

    def set_version(self, version: str) -> None:
        set_version(self.module, version)

    def set_gpu(self, gpu: SimulatedGpu | None) -> None:
        self.state.gpu = gpu
        forget_availability()  # what the backend table probed no longer holds


def install_double(monkeypatch: pytest.MonkeyPatch, profile: str,
                   gpu: SimulatedGpu | None = DEFAULT_GPU) -> TrtDouble:
    memory = FakeMemory()
    module = make_tensorrt(profile, gpu=gpu, memory=memory)
    state: DoubleState = module._double_state  # type: ignore[attr-defined]

    def current_gpu() -> tuple[str, tuple[int, int]] | None:
        return None if state.gpu is None else (state.gpu.name, state.gpu.compute_capability)

    device = FakeDevice(memory, current_gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setattr(trt_device, "default_device", lambda: device)
    monkeypatch.setattr(backends_base, "_PROBED", {})  # probed afresh under the double, and again after it
    return TrtDouble(module, device, profile)


@pytest.fixture(params=["10", "11"], ids=["trt10", "trt11"])
def trt_double(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrtDouble]:
    """The double under both API profiles; touching an API 10.x deprecates (11.x removes) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TensorRTDeprecationWarning)
        yield install_double(monkeypatch, request.param)


@pytest.fixture()
def trt_double_no_gpu(monkeypatch: pytest.MonkeyPatch) -> TrtDouble:
    """TensorRT importable but no CUDA device (trt.Builder fails, as without a driver)."""
    return install_double(monkeypatch, "10", gpu=None)


TINY = "tests.fixtures.user_models:tiny_segmenter"


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_segmenter exported by deploykit (dynamic batch/height/width, metadata input size 64x64)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    result = onnx_from_torch(load_model(TINY), path, input_shape=(1, 3, 64, 64), simplify=False)
    assert result.passed
    return path
