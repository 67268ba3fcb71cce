"""TensorRT's entry points for the backend table (deploykit.backends.base explains the protocol).

TensorRT counts as available only when a builder can be constructed: `import tensorrt` works without a CUDA
driver, `trt.Builder(logger)` does not (see deploykit.environment.tensorrt_status).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from deploykit.backends.base import Availability, Compiled, Runner
from deploykit.backends.tensorrt.build import TensorRTBuildOptions as Options
from deploykit.backends.tensorrt.build import engine_from_onnx, lint_or_fail
from deploykit.io.sidecar import Sidecar
from deploykit.types import Progress

__all__ = ["Options", "as_deployed", "availability", "compile", "open", "preflight"]


def availability() -> Availability:
    from deploykit.environment import tensorrt_status

    return tensorrt_status()


def preflight(model: onnx.ModelProto, source: str) -> None:
    """Fail on what TensorRT cannot parse before a slow precision pass."""
    lint_or_fail(model, source)


def as_deployed(model: onnx.ModelProto, *, threads: int | None, optimize: bool,
                float_source: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """TensorRT compiles the Q/DQ graph as it is; ONNX Runtime simulating it is the closest CPU stand-in."""
    return model


def compile(graph: Path, out: Path, options: Options | None, *, force: bool, threads: int | None,
            progress: Progress, float_source: Path | None = None) -> Compiled:
    written = engine_from_onnx(graph, out, options, force=force, progress=progress, write_sidecar=False)
    return Compiled(backend_version=written.backend_version, device=dict(written.device),
                    build_options=dict(written.build_options), artifact_sha256=written.artifact_sha256)


def open(artifact: Path, sidecar: Sidecar | None, *, providers: Sequence[str] = ("cpu",),
         threads: int | None = None) -> Runner:
    from deploykit.backends.tensorrt.runner import TensorRTRunner

    return TensorRTRunner.from_artifact(artifact)
