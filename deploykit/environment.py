"""What this machine offers: library versions, ONNX Runtime providers, GPUs and CPU (model and flags).

Each backend's availability is its own entry's probe (deploykit.backends.base.availabilities); doctor shows both.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from deploykit.errors import InputError, size_text

# Set to 1 to leave ONNX Runtime's and OpenVINO's usage telemetry as they ship it (see runtime_telemetry_off).
RUNTIME_TELEMETRY = "DEPLOYKIT_RUNTIME_TELEMETRY"


# The vector extensions that shape CPU timings and INT8 choices (VNNI, AVX-512, AMX): what doctor and every
# benchmark's manifest name beside the CPU model.
PERFORMANCE_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                     "amx_bf16")


@dataclass(frozen=True)
class Environment:
    python: str
    platform: str
    cpu: str
    cores: int
    versions: dict[str, str]
    onnxruntime_providers: list[str]
    cuda_devices: list[str] = field(default_factory=list)
    cpu_flags: list[str] = field(default_factory=list)  # PERFORMANCE_FLAGS this CPU has

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


def runtime_telemetry_off() -> None:
    """Keep the runtimes' usage telemetry off in this process, before they are imported, unless the user set
    DEPLOYKIT_RUNTIME_TELEMETRY=1 (or ORT_DISABLE_TELEMETRY themselves). ONNX Runtime's 1DS client writes a
    session file (.ses) into $TMPDIR and a device id under ~/.cache; OpenVINO's model converter sends Google
    Analytics events without asking (convert_model turns its opt-in dialog off), keeps a client id in ~/intel, and
    cost 1.7 s of every converting process here (2.1 s against 0.5 s for a tiny model). OpenVINO's converter
    falls back to its own no-op stub when the openvino_telemetry package cannot be imported."""
    if os.environ.get(RUNTIME_TELEMETRY) == "1":
        return
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # read once, when ONNX Runtime initializes
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: "cannot be imported"


def _onnxruntime() -> Any:
    import onnxruntime

    return onnxruntime


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory the kernel says can be allocated without swapping (MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(needed: int, what: str, fix: str, parts: str = "") -> None:
    """Refuse, before anything is allocated, work that needs more memory than is available: under overcommit the
    allocations succeed and the kernel's OOM killer ends the process without a word (exit 137). `what` names
    the work ("a run at 8x3x64x64"), `parts` says what the estimate counts, `fix` how to make it fit."""
    free = available_memory()
    if free is not None and needed > free:
        counted = f" ({parts})" if parts else ""
        raise InputError(f"{what} needs about {size_text(needed)}{counted} and this machine has {size_text(free)} "
                         f"available; {fix}")


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
    names = ("deploykit", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "onnxslim", "numpy",
             "click", "tensorrt")
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu_model(),
        cores=os.cpu_count() or 1,
        versions={name: package_version(name) or "-" for name in names},
        onnxruntime_providers=list(_onnxruntime().get_available_providers()),
        cuda_devices=cuda_devices(),
        cpu_flags=sorted(cpu_flags() & set(PERFORMANCE_FLAGS)),
    )
