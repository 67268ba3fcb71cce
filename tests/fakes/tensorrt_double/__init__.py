"""A test double of NVIDIA's `tensorrt` Python module, with a TensorRT 10.x and a TensorRT 11.x API profile.

Both profiles expose the documented surfaces deploykit may use (Builder, OnnxParser, IBuilderConfig, Runtime,
ICudaEngine, IExecutionContext, the enums, nptype); the 10.x profile adds what 10.x deprecated and 11.x removed
(BuilderFlag.FP16/INT8/..., NetworkDefinitionCreationFlag.EXPLICIT_BATCH, IBuilderConfig.int8_calibrator,
Builder.platform_has_fast_fp16, OnnxParser.supports_model, ICudaEngine.device_memory_size, the INT8
calibrators), which warn with TensorRTDeprecationWarning there. Without a simulated GPU, constructing a Builder
or Runtime fails as it does without a CUDA driver. Plans it builds are ONNX models it runs with ONNX Runtime.

The version strings carry a "+testdouble" label, so anything recorded under the double says so.
"""

from __future__ import annotations

import types
from typing import Any

from tests.fakes.device import FakeMemory
from tests.fakes.tensorrt_double._build import (
    Builder10,
    BuilderBase,
    IBuilderConfig10,
    IBuilderConfigBase,
    IHostMemory,
    IOptimizationProfile,
    ITimingCache,
)
from tests.fakes.tensorrt_double._enums import REMOVED_IN_11, make_enums, nptype
from tests.fakes.tensorrt_double._parse import INetworkDefinition, ITensor, OnnxParserBase, ParserError
from tests.fakes.tensorrt_double._runtime import ICudaEngine10, ICudaEngineBase, IExecutionContext, RuntimeBase
from tests.fakes.tensorrt_double._state import (
    DoubleState,
    ILogger,
    Logger,
    SimulatedGpu,
    TensorRTDeprecationWarning,
    warn_deprecated,
)

__all__ = ["DEFAULT_GPU", "PROFILES", "REMOVED_IN_11_MEMBERS", "DoubleState", "SimulatedGpu",
           "TensorRTDeprecationWarning", "make_tensorrt", "set_version"]

PROFILES = {"10": "10.16.1.11+testdouble", "11": "11.4.0.106+testdouble"}
DEFAULT_GPU = SimulatedGpu("NVIDIA A10 (simulated by the test double)", (8, 6))

# Class members present in 10.x (deprecated) and absent in 11.x.
REMOVED_IN_11_MEMBERS = {
    "Builder": ["platform_has_fast_fp16", "platform_has_fast_int8"],
    "IBuilderConfig": ["int8_calibrator", "quantization_flags"],
    "OnnxParser": ["supports_model"],
    "ICudaEngine": ["device_memory_size", "create_execution_context_without_device_memory"],
}
REMOVED_IN_11_CLASSES = ["IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
                         "IInt8LegacyCalibrator", "CalibrationAlgoType"]


class _OnnxParser10(OnnxParserBase):
    def supports_model(self, model: bytes, path: str | None = None) -> tuple[bool, list[Any]]:
        warn_deprecated(self, "OnnxParser.supports_model")
        return self.supports_model_v2(model, path), []


class _Calibrator:
    def __init__(self) -> None:
        raise TypeError("INT8 calibrators are deprecated in TensorRT 10 and removed in 11 (test double)")


def make_tensorrt(profile: str, *, gpu: SimulatedGpu | None = DEFAULT_GPU,
                  memory: FakeMemory | None = None) -> types.ModuleType:
    """A fresh `tensorrt` module for `profile` ("10" or "11"); its state is `module._double_state`."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: choose one of {', '.join(PROFILES)}")
    module = types.ModuleType("tensorrt", f"tensorrt test double ({profile}.x API)")
    state = DoubleState(profile, PROFILES[profile], gpu, memory or FakeMemory())
    ten = profile == "10"
    bound: dict[str, Any] = {"trt": module, "state": state}
    classes = {
        "Builder": Builder10 if ten else BuilderBase,
        "IBuilderConfig": IBuilderConfig10 if ten else IBuilderConfigBase,
        "OnnxParser": _OnnxParser10 if ten else OnnxParserBase,
        "ICudaEngine": ICudaEngine10 if ten else ICudaEngineBase,
        "Runtime": RuntimeBase, "IExecutionContext": IExecutionContext, "INetworkDefinition": INetworkDefinition,
        "ITensor": ITensor, "IOptimizationProfile": IOptimizationProfile, "ITimingCache": ITimingCache,
        "ParserError": ParserError,
    }
    for name, cls in classes.items():
        setattr(module, name, type(name, (cls,), dict(bound)))
    for name, value in make_enums(profile).items():
        setattr(module, name, value)
    module.ILogger = ILogger  # type: ignore[attr-defined]
    module.Logger = Logger  # type: ignore[attr-defined]
    module.IHostMemory = IHostMemory  # type: ignore[attr-defined]
    module.nptype = nptype  # type: ignore[attr-defined]
    module.__version__ = state.version  # type: ignore[attr-defined]
    module._double_state = state  # type: ignore[attr-defined]
    if ten:
        for name in REMOVED_IN_11_CLASSES:
            setattr(module, name, type(name, (_Calibrator,), {}))
    assert all(hasattr(getattr(module, e), m) == ten for e, ms in REMOVED_IN_11.items() for m in ms)
    return module


def set_version(module: types.ModuleType, version: str) -> None:
    """Pretend a different TensorRT is installed (e.g. an upgrade between build and load)."""
    module.__version__ = version  # type: ignore[attr-defined]
    module._double_state.version = version  # type: ignore[attr-defined]

