"""What the TensorRT builder and runner share: the lazy import, a logger that keeps TensorRT's messages for our
error messages, and the check that an engine's sidecar fits the running TensorRT and GPU.

Compatibility rules (NVIDIA's "Engine Compatibility" guide, TensorRT 10.x/11.x): an engine runs only on the
TensorRT version that built it, unless built with BuilderFlag.VERSION_COMPATIBLE (then on the same or a later
version; 10.x engines on 11.x too); and only on GPUs of the compute capability it was built on, unless built
with HardwareCompatibilityLevel.AMPERE_PLUS (then on any compute capability 8.0 or later).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from deploykit.backends.tensorrt.device import DeviceInfo
from deploykit.errors import BackendUnavailable
from deploykit.io.sidecar import Sidecar

INSTALL_HINT = "pip install 'deploykit[tensorrt]' on a machine with an NVIDIA GPU"
HARDWARE_LEVELS = ("none", "ampere+")


def import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from exc
    except Exception as exc:  # a broken install (libnvinfer missing) raises OSError and others
        raise BackendUnavailable(f"import tensorrt failed: {str(exc).splitlines()[0]}; reinstall TensorRT") from exc


def make_logger(trt: Any) -> Any:
    """A trt.ILogger that keeps errors and warnings, so failures can quote what TensorRT said."""
    severity = trt.ILogger.Severity

    class KeepingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, level: Any, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(str(msg))
            elif level == severity.WARNING:
                self.warnings.append(str(msg))

        def said(self, limit: int = 3) -> str:
            """The last few errors, for a one-line message."""
            return "; ".join(self.errors[-limit:]) or "TensorRT logged no error"

    return KeepingLogger()


def version_tuple(text: str) -> tuple[int, ...]:
    """'10.16.1.11' -> (10, 16, 1, 11); anything after the numbers (a local label) is ignored."""
    match = re.match(r"\d+(\.\d+)*", text.strip())
    return tuple(int(p) for p in match.group(0).split(".")) if match else ()


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major or 0), int(minor or 0)


def check_engine_compatibility(sidecar: Sidecar, *, trt_version: str, device: DeviceInfo,
                               where: str = "this engine") -> list[str]:
    """Fail with a clear message when `sidecar`'s engine cannot run here; return notes for the caller."""
    options: Mapping[str, Any] = sidecar.build_options
    built, running = sidecar.backend_version, trt_version
    rebuild = ("rebuild it here with `deploykit build-engine MODEL.onnx --backend tensorrt`")
    notes: list[str] = []
    if not options.get("version_compatible"):
        if version_tuple(built) != version_tuple(running):
            raise BackendUnavailable(
                f"{where} was built with TensorRT {built}, and this machine has TensorRT {running}; an engine "
                f"runs only on the TensorRT that built it: {rebuild}, or build it with --version-compatible")
    else:
        b, r = version_tuple(built), version_tuple(running)
        if r < b or not b or not r or r[0] > b[0] + 1:
            raise BackendUnavailable(
                f"{where} is version-compatible from TensorRT {built} on, but this machine has TensorRT {running}; "
                f"{rebuild}")
    level = str(options.get("hardware_compatibility", "none"))
    built_cc = _cc(str(sidecar.device.get("compute_capability", "0.0")))
    if level == "ampere+":
        if device.compute_capability < (8, 0):
            raise BackendUnavailable(
                f"{where} was built for Ampere and newer GPUs (compute capability 8.0+), and this GPU "
                f"({device.name}) has compute capability {device.cc}; {rebuild}")
    elif device.compute_capability != built_cc:
        raise BackendUnavailable(
            f"{where} was built on a GPU of compute capability {built_cc[0]}.{built_cc[1]} "
            f"({sidecar.device.get('gpu', '?')}), and this GPU ({device.name}) has {device.cc}; {rebuild}, or build "
            "it with --hardware-compatibility ampere+")
    if sidecar.device.get("gpu") and sidecar.device.get("gpu") != device.name and level == "none":
        notes.append(f"built on {sidecar.device.get('gpu')}, running on {device.name} (same compute capability); "
                     "TensorRT tunes for the building GPU, so rebuilding here may be faster")
    return notes
