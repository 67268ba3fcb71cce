"""ONNX Runtime's entry points for the backend table (deploykit.backends.base explains the protocol).

The artifact is ONNX Runtime's optimized form of the precision graph with its INT8 lowering
(deploykit.backends.onnxruntime.compile); the sidecar records the optimization level and the lowering.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
import onnxruntime

from deploykit.backends.base import Availability, Compiled
from deploykit.backends.onnxruntime.compile import OPTIMIZATION, ort_model_from_onnx, ort_optimized
from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.environment import cpu_flags, cpu_model
from deploykit.evaluate import provider_chain
from deploykit.graph.cpu_int8 import lower_for_cpu
from deploykit.graph.seven_bit import needs_seven_bit_weights
from deploykit.io.sidecar import Sidecar
from deploykit.runner import Runner
from deploykit.types import Progress

Options = None  # ONNX Runtime builds take no options beyond threads
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def availability() -> Availability:
    return Availability("ready", str(onnxruntime.__version__))  # a dependency of deploykit: always here


def preflight(model: onnx.ModelProto, source: str) -> None:
    """ONNX Runtime runs every standard operator: nothing to check before the precision pass."""


def as_deployed(model: onnx.ModelProto, *, threads: int | None, optimize: bool,
                float_source: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """The INT8 lowering the artifact gets, and with `optimize` ONNX Runtime's optimizations too."""
    lowered = lower_for_cpu(model, float_source=float_source).model
    return ort_optimized(lowered, threads=threads).model if optimize else lowered


def _device() -> dict[str, Any]:
    flags = cpu_flags()
    return {"cpu": cpu_model(), "cpu_flags": [f for f in CPU_FLAGS if f in flags],
            "providers": ["CPUExecutionProvider"]}


def compile(graph: Path, out: Path, options: None, *, precision: str, force: bool, threads: int | None,
            progress: Progress, float_source: onnx.ModelProto | None = None) -> Compiled:
    progress(f"compiling with ONNX Runtime (optimization level {OPTIMIZATION}, portable across CPUs)")
    lowered, unoptimized = ort_model_from_onnx(graph, out, force=force, threads=threads,
                                               seven_bit=needs_seven_bit_weights(), float_source=float_source)
    if lowered.seven_bit:
        progress(f"INT8 weights of {lowered.seven_bit} convs quantized to 7 bits for ONNX Runtime (depthwise convs "
                 "keep 8): this CPU has no VNNI (see deploykit.graph.seven_bit)")
    level = "disable" if unoptimized else OPTIMIZATION  # the artifact's: sessions optimize it when they load it
    return Compiled(backend_version=onnxruntime.__version__, device=_device(),
                    build_options={"optimization_level": level, "int8_lowering": lowered.facts()},
                    notes=(unoptimized,) if unoptimized else ())


def open(artifact: Path, sidecar: Sidecar | None, *, providers: Sequence[str] = ("cpu",),
         threads: int | None = None) -> Runner:
    return OnnxRuntimeRunner(artifact, providers=provider_chain(providers), threads=threads)
