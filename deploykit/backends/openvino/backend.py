"""OpenVINO's entry points for the backend table (deploykit.backends.base explains the protocol).

The artifact is OpenVINO IR: OUT.xml with OUT.bin beside it (the entry's `companions`), compiled from the
precision graph by deploykit.backends.openvino.compile and run by OpenVinoRunner. OpenVINO reads ONNX Q/DQ as
FakeQuantize and runs the quantized convolutions in INT8, so the calibration, budget and parity are the same
as ONNX Runtime's; the budget search scores the Q/DQ graph in ONNX Runtime (`as_deployed` returns it with the
lowering the compile step applies), the closest float simulation of what the CPU plugin runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import onnx

from deploykit.backends.base import Availability, Compiled
from deploykit.backends.openvino.compile import compile as to_ir
from deploykit.backends.openvino.runner import DEVICE, open_runner
from deploykit.errors import first_line, not_installed
from deploykit.graph.cpu_int8 import lower_for_cpu
from deploykit.io.sidecar import Sidecar
from deploykit.runner import Runner
from deploykit.types import Progress

__all__ = ["Options", "as_deployed", "availability", "compile", "open", "preflight"]

Options = None  # OpenVINO builds take no options beyond threads


def availability() -> Availability:
    """Ready when the package imports and its Core lists a CPU device."""
    try:
        ov = importlib.import_module("openvino")
    except ImportError as exc:
        if not_installed(exc, "openvino"):
            return Availability("not installed", reason="pip install 'deploykit[openvino]'")
        return Availability("unusable", reason=f"import openvino failed: {first_line(exc)}; reinstall OpenVINO")
    except (Exception, SystemExit) as exc:  # a broken install raises OSError / RuntimeError
        return Availability("unusable", reason=f"import openvino failed: {first_line(exc)}")
    try:
        devices = list(ov.Core().available_devices)
    except Exception as exc:  # the Core constructor loads the device plugins
        return Availability("unusable", reason=f"openvino.Core() failed: {first_line(exc)}")
    if DEVICE not in devices:
        listed = ", ".join(devices) or "none"
        return Availability("unusable", reason=f"OpenVINO lists no CPU device (devices: {listed})")
    return Availability("ready", str(ov.get_version()).split("-")[0])


def preflight(model: onnx.ModelProto, source: str) -> None:
    """The CPU plugin's verdict comes from compiling the IR, which the build does before writing it."""


def as_deployed(model: onnx.ModelProto, *, threads: int | None, optimize: bool,
                float_source: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The lowered Q/DQ graph OpenVINO compiles (deploykit.graph.cpu_int8); ONNX Runtime running it is the
    stand-in the budget scores."""
    return lower_for_cpu(model, float_source=float_source).model


def compile(graph: Path, out: Path, options: None, *, precision: str, force: bool, threads: int | None,
            progress: Progress, float_source: onnx.ModelProto | None = None) -> Compiled:
    facts = to_ir(graph, out, force=force, threads=threads, progress=progress, float_source=float_source)
    return Compiled(backend_version=str(facts["backend_version"]), device=dict(facts["device"]),
                    build_options=dict(facts["build_options"]))


def open(artifact: Path, sidecar: Sidecar | None, *, providers: Sequence[str] = ("cpu",),
         threads: int | None = None) -> Runner:
    return open_runner(artifact, threads=threads)
