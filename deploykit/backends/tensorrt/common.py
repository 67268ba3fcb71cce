"""What the TensorRT builder and runner share: the lazy import, the process-wide logger, the I/O dtype table,
and the check that an engine's sidecar fits the running TensorRT and GPU.

Compatibility rules (NVIDIA's "Engine Compatibility" guide, TensorRT 10.x/11.x): an engine runs only on the
TensorRT version that built it, unless built with BuilderFlag.VERSION_COMPATIBLE (then on the same or a later
version; 10.x engines on 11.x too); and only on GPUs of the compute capability it was built on, unless built
with HardwareCompatibilityLevel.AMPERE_PLUS (then on any compute capability 8.0 or later).
"""

from __future__ import annotations

import importlib
import re
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deploykit.backends.tensorrt.device import DeviceInfo
from deploykit.errors import BackendUnavailable, first_line, not_installed
from deploykit.io.sidecar import Sidecar

INSTALL_HINT = "pip install 'deploykit[tensorrt]' on a machine with an NVIDIA GPU"
HARDWARE_LEVELS = ("none", "ampere+")
_KEPT = 200  # messages kept per severity: enough to quote, bounded for long-running processes


def import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        if not_installed(exc, "tensorrt"):
            raise BackendUnavailable(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from exc
        raise BackendUnavailable(f"import tensorrt failed: {first_line(exc)}; reinstall TensorRT") from exc
    except Exception as exc:  # a broken install (libnvinfer missing) raises OSError and others
        raise BackendUnavailable(f"import tensorrt failed: {first_line(exc)}; reinstall TensorRT") from exc


_LOGGERS: dict[int, Any] = {}  # id(tensorrt module) -> its one logger (tests swap the module for a double)
_LOCK = threading.Lock()


def process_logger(trt: Any) -> Any:
    """The one trt.ILogger this process gives TensorRT: every Builder, Runtime and OnnxParser gets this one.

    TensorRT treats the logger as a process-wide singleton: "although a logger is passed on creation to each
    instance of a Builder or Runtime interface, the logger is internally considered a singleton, and thus
    multiple instances of Runtime and/or Builder must all use the same logger" (TensorRT Python API, Logger,
    7.2-8.x; the 10.x ILogger reference adds that it "must be thread safe"). With one logger per build or
    runner, a second engine's errors reached the first logger and failures said "TensorRT logged no error".
    Callers take `mark()` before a TensorRT call and quote `said(since=mark)` after it.
    """
    with _LOCK:
        logger = _LOGGERS.get(id(trt))
        if logger is None or logger.trt is not trt:
            logger = _LOGGERS[id(trt)] = _make_logger(trt)
        return logger


def _make_logger(trt: Any) -> Any:
    severity = trt.ILogger.Severity

    class KeepingLogger(trt.ILogger):
        """Keeps the last errors and warnings (thread-safe), numbered so a caller can ask what came after a mark."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11 requires the base __init__ (TensorRT Python API, ILogger)
            self.trt = trt
            self.count = 0
            self.errors: deque[tuple[int, str]] = deque(maxlen=_KEPT)
            self.warnings: deque[tuple[int, str]] = deque(maxlen=_KEPT)
            self._lock = threading.Lock()

        def log(self, level: Any, msg: str) -> None:
            with self._lock:
                self.count += 1
                if level in (severity.INTERNAL_ERROR, severity.ERROR):
                    self.errors.append((self.count, str(msg)))
                elif level == severity.WARNING:
                    self.warnings.append((self.count, str(msg)))

        def mark(self) -> int:
            with self._lock:
                return self.count

        def note(self, msg: str) -> None:
            """Record an error deploykit saw itself (a torch capture failure), quoted like TensorRT's."""
            self.log(severity.ERROR, msg)

        def said(self, since: int = 0, limit: int = 3) -> str:
            """The last few errors logged after `since`, for a one-line message."""
            with self._lock:
                recent = [m for n, m in self.errors if n > since][-limit:]
            return "; ".join(recent) or "TensorRT logged no error"

        def warned(self, since: int = 0) -> list[str]:
            """The distinct warnings logged after `since`, in order (a build shows them; they are often the
            only sign of a clamped weight or a layer that fell back)."""
            with self._lock:
                return list(dict.fromkeys(m for n, m in self.warnings if n > since))

        def kept(self) -> list[tuple[str, str]]:
            """Every kept error and warning, oldest first, as (severity, message): the self-test's log."""
            with self._lock:
                merged = sorted([(n, "error", m) for n, m in self.errors] +
                                [(n, "warning", m) for n, m in self.warnings])
            return [(kind, message) for _, kind, message in merged]

    return KeepingLogger()


def new_runtime(trt: Any, logger: Any, mark: int, *, version_compatible: bool) -> Any:
    """A trt.Runtime able to deserialize the plan. A version-compatible plan carries its lean runtime, which
    TensorRT runs only when the application allows host code: "Application needs to opt into allowing
    deserialization of engines with embedded lean runtime" (NVIDIA/TensorRT samples/common/sampleEngines.cpp,
    setEngineHostCodeAllowed; Polygraphy's EngineFromBytes sets `engine_host_code_allowed = True` too)."""
    try:
        runtime = trt.Runtime(logger)
    except Exception as exc:  # no CUDA driver: pybind11 raises from the constructor
        raise BackendUnavailable(f"TensorRT cannot create a runtime ({first_line(exc)}; "
                                 f"{logger.said(mark)})") from exc
    if version_compatible:
        runtime.engine_host_code_allowed = True
    return runtime


@dataclass(frozen=True)
class IoType:
    """How one TensorRT I/O dtype is held: the numpy dtype of the host side (what feeds and outputs use) and the
    torch dtype of the device buffer TensorRT reads or writes."""

    host: str  # numpy dtype name
    device: str  # torch dtype attribute name


# trt.DataType name -> IoType. trt.nptype knows FLOAT, HALF, INT8, INT32, INT64, BOOL and UINT8 only ("fp8 and
# bfloat16 have no equivalent numpy type", tensorrt/__init__.py of the 10.x bindings) and raises TypeError on the
# rest. BF16 and FP8 buffers are torch.bfloat16 / torch.float8_e4m3fn (TensorRT's FP8 is E4M3, "Working with
# Quantized Types") with float32 on the host: torch converts on the device, in the copy, and says so in the spec.
IO_TYPES = {
    "FLOAT": IoType("float32", "float32"), "HALF": IoType("float16", "float16"), "INT8": IoType("int8", "int8"),
    "INT32": IoType("int32", "int32"), "INT64": IoType("int64", "int64"), "BOOL": IoType("bool", "bool"),
    "UINT8": IoType("uint8", "uint8"), "BF16": IoType("float32", "bfloat16"),
    "FP8": IoType("float32", "float8_e4m3fn"),
}


def io_type(dtype: Any, tensor: str) -> IoType:
    """The IoType of a TensorRT I/O tensor, or a BackendUnavailable naming the tensor, its type and the fix
    (INT4, FP4 and E8M0 pack sub-byte values that neither numpy nor torch can hold as a tensor here)."""
    name = str(getattr(dtype, "name", dtype)).split(".")[-1]
    if name in IO_TYPES:
        return IO_TYPES[name]
    raise BackendUnavailable(
        f"engine tensor {tensor!r} is {name} at the engine's boundary, which deploykit cannot feed or read "
        f"(it holds {', '.join(IO_TYPES)}); keep quantized types inside the graph (DequantizeLinear before "
        "the output, QuantizeLinear after the input) and rebuild")


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
