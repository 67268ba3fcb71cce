"""OpenVINO's entry points for the backend table (deploykit.backends.base explains the protocol).

The artifact is OpenVINO IR: OUT.xml with OUT.bin beside it (the entry's `companions`), compiled from the
precision graph by deploykit.backends.openvino.compile and run by OpenVinoRunner. OpenVINO reads ONNX Q/DQ as
FakeQuantize and runs the quantized convolutions in INT8, so the calibration, budget and parity are the same
as ONNX Runtime's; the budget search scores the Q/DQ graph in ONNX Runtime (`as_deployed` returns it as is),
the closest float simulation of what the CPU plugin runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from deploykit.backends.base import Availability, Compiled, Runner
from deploykit.io.sidecar import Sidecar
from deploykit.types import Progress

__all__ = ["Options", "as_deployed", "availability", "compile", "open", "preflight"]

Options = None  # OpenVINO builds take no options beyond threads


def availability() -> Availability:
    from deploykit.backends.openvino.compile import availability as probe

    state, reason = probe()
    if state != "ready":
        return Availability("not installed" if state == "not installed" else "unusable", reason=reason)
    import openvino

    return Availability("ready", str(openvino.get_version()).split("-")[0])


def preflight(model: onnx.ModelProto, source: str) -> None:
    """The CPU plugin's verdict comes from compiling the IR, which the build does before writing it."""


def as_deployed(model: onnx.ModelProto, *, threads: int | None, optimize: bool,
                float_source: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The Q/DQ graph OpenVINO compiles (7-bit weights on CPUs without VNNI, deploykit.backends.openvino.compile);
    ONNX Runtime running it is the stand-in the budget scores."""
    from deploykit.backends.openvino.compile import lowered

    return lowered(model, float_source)[0]


def compile(graph: Path, out: Path, options: None, *, force: bool, threads: int | None,
            progress: Progress, float_source: Path | None = None) -> Compiled:
    from deploykit.backends.openvino.compile import compile as to_ir

    facts = to_ir(graph, out, force=force, threads=threads, progress=progress, float_source=float_source)
    return Compiled(backend_version=str(facts["backend_version"]), device=dict(facts["device"]),
                    build_options=dict(facts["build_options"]))


def open(artifact: Path, sidecar: Sidecar | None, *, providers: Sequence[str] = ("cpu",),
         threads: int | None = None) -> Runner:
    from deploykit.backends.openvino.runner import open_runner

    return open_runner(artifact, threads=threads)
