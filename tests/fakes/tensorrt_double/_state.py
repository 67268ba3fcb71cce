"""Shared pieces of the tensorrt double: per-module state, the object base class, Dims, the logger classes."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.device import FakeMemory
from tests.fakes.tensorrt_double._enums import Severity


class TensorRTDeprecationWarning(DeprecationWarning):
    """What the 10.x profile raises when code touches an API deprecated in 10.x and removed in 11.x."""


@dataclass
class SimulatedGpu:
    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int = 8 << 30


@dataclass
class DoubleState:
    profile: str  # "10" or "11"
    version: str
    gpu: SimulatedGpu | None
    memory: FakeMemory
    builds: list[dict[str, Any]] = field(default_factory=list)  # what each build_serialized_network was given
    timing_cache_hits: int = 0
    deprecated_calls: list[str] = field(default_factory=list)
    logger: Any = None  # the first logger any Builder/Runtime/OnnxParser was given: the one TensorRT keeps


class Base:
    """Objects of one double module reach their module (`trt`) and its state through these class attributes."""

    trt: Any = None
    state: DoubleState

    def require_logger(self, logger: Any) -> None:
        # pybind11 refuses an ILogger subclass whose __init__ did not call ILogger.__init__ (NVIDIA/TensorRT
        # python/docstrings/infer/pyCoreDoc.h l.29, ILogger: "ensure that you explicitly instantiate the base class
        # in __init__()").
        if not getattr(logger, "_ilogger_initialised", False):
            raise TypeError("tensorrt.ILogger.__init__() must be called when overriding __init__")

    def adopt_logger(self, logger: Any) -> Any:
        """Rule: one logger per process, the first one given. TensorRT's Logger docs: "the logger is internally
        considered a singleton, and thus multiple instances of Runtime and/or Builder must all use the same
        logger" (Python API 7.2-8.x; deploykit/shared notes: later loggers receive nothing). So a second
        logger passed here is ignored and every message goes to the first."""
        self.require_logger(logger)
        if self.state.logger is None:
            self.state.logger = logger
        return self.state.logger

    def require_gpu(self, logger: Any) -> None:
        # Without a CUDA driver `import tensorrt` works and the constructors fail as below: the bindings construct
        # with py::init([](ILogger& logger) { return nvinfer1::createInferBuilder(logger); }) (NVIDIA/TensorRT
        # python/src/infer/pyCore.cpp l.1907; createInferRuntime l.1961), and pybind11 raises "factory function
        # returned nullptr" when that returns null, after TensorRT logs "CUDA initialization failure".
        if self.state.gpu is None:
            logger.log(Severity.ERROR, "CUDA initialization failure with error: 35. Please check your CUDA "
                                       "installation: http://docs.nvidia.com/cuda/cuda-installation-guide-linux")
            raise TypeError("pybind11::init(): factory function returned nullptr")


class Dims(tuple):  # type: ignore[type-arg]
    """tensorrt.Dims: a sequence of ints (-1 for a dynamic dimension)."""


def warn_deprecated(obj: Any, name: str) -> None:
    obj.state.deprecated_calls.append(name)
    warnings.warn(f"{name} is deprecated and removed in TensorRT 11", TensorRTDeprecationWarning, stacklevel=3)


def deprecated(name: str, getter: Callable[[Any], Any]) -> property:
    """A 10.x member deprecated there and removed in 11.x: it works, warns, and is recorded."""

    def get(self: Any) -> Any:
        warn_deprecated(self, name)
        return getter(self)

    return property(get)


class ILogger:
    Severity = Severity
    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        self._ilogger_initialised = True

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError("ILogger.log is pure virtual")


class Logger(ILogger):
    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity
        self.messages: list[tuple[Severity, str]] = []

    def log(self, severity: Severity, msg: str) -> None:
        if severity <= self.min_severity:
            self.messages.append((severity, msg))
