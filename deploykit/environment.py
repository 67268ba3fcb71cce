"""What this machine offers: library versions, ONNX Runtime providers, TensorRT's state, GPUs and CPU.

TensorRT is probed by constructing a builder, not by import: `import tensorrt` succeeds without a CUDA
driver, but `trt.Builder(logger)` fails there (NVIDIA's TensorRT Python API: the Builder constructor needs
an initialised CUDA context).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from deploykit.backends.base import Availability

TensorRTStatus = Availability  # TensorRT's availability, as every backend reports it


@dataclass(frozen=True)
class Environment:
    python: str
    platform: str
    cpu: str
    cores: int
    versions: dict[str, str]
    onnxruntime_providers: list[str]
    tensorrt: TensorRTStatus
    cuda_devices: list[str] = field(default_factory=list)
    backends: dict[str, dict[str, str]] = field(default_factory=dict)  # BACKENDS name -> availability

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def tensorrt_status() -> TensorRTStatus:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return TensorRTStatus("not installed",
                              reason="pip install 'deploykit[tensorrt]' on a machine with an NVIDIA GPU")
    except Exception as exc:  # a broken install (missing libnvinfer) raises OSError and others
        return TensorRTStatus("unusable", reason=f"import tensorrt failed: {str(exc).splitlines()[0]}")
    version = str(getattr(trt, "__version__", ""))
    from deploykit.backends.tensorrt.common import process_logger  # TensorRT keeps the first logger it is given

    try:
        builder = trt.Builder(process_logger(trt))
    except Exception as exc:  # pybind11 raises TypeError/RuntimeError without a CUDA driver
        return TensorRTStatus("unusable", version, f"cannot construct a builder: {str(exc).splitlines()[0]}")
    if builder is None:
        return TensorRTStatus("unusable", version, "trt.Builder returned None (no CUDA device?)")
    return TensorRTStatus("ready", version)


def cuda_devices() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    devices = []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        devices.append(f"{index}: {torch.cuda.get_device_name(index)} (compute capability {major}.{minor})")
    return devices


def probe() -> Environment:
    import onnxruntime

    from deploykit.backends.base import BACKENDS

    names = ("deploykit", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "onnxslim", "numpy",
             "click", "tensorrt")
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        versions={name: package_version(name) or "-" for name in names},
        onnxruntime_providers=list(onnxruntime.get_available_providers()),
        tensorrt=tensorrt_status(),
        cuda_devices=cuda_devices(),
        backends={name: _availability(entry) for name, entry in BACKENDS.items()},
    )


def _availability(entry: Any) -> dict[str, str]:
    from deploykit.errors import BackendUnavailable

    try:
        return dict(entry.availability().to_dict())
    except BackendUnavailable as exc:
        return {"state": "not installed", "version": "", "reason": str(exc)}
