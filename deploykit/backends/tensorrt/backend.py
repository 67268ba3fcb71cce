"""TensorRT's entry points for the backend table (deploykit.backends.base explains the protocol).

TensorRT counts as available only when a builder can be constructed, not when it imports: `import tensorrt`
succeeds without a CUDA driver, but `trt.Builder(logger)` fails there (NVIDIA's TensorRT Python API: the Builder
constructor needs an initialised CUDA context).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import onnx

from deploykit.backends.base import Availability, CliOption, Compiled
from deploykit.backends.tensorrt.audit import PrecisionAudit
from deploykit.backends.tensorrt.build import TensorRTBuildOptions as Options
from deploykit.backends.tensorrt.build import engine_from_onnx, lint_or_fail
from deploykit.backends.tensorrt.common import HARDWARE_LEVELS, process_logger
from deploykit.backends.tensorrt.runner import TensorRTRunner
from deploykit.errors import first_line, not_installed
from deploykit.io.sidecar import Sidecar
from deploykit.runner import Runner
from deploykit.types import Progress

__all__ = ["OPTIONS", "Options", "as_deployed", "availability", "compile", "open", "preflight"]

# Its build-engine options, each passed on only when given (another backend's build rejects them).
OPTIONS = (
    CliOption("--min-shape", "min_shape", "TensorRT profile: smallest input shape (default 1 x C x H/2 x W/2 of the "
              "model's size).", multiple=True, metavar="NAME:NxCxHxW"),
    CliOption("--opt-shape", "opt_shape", "TensorRT profile: the shape to tune for (default 1 x C x H x W).",
              multiple=True, metavar="NAME:NxCxHxW"),
    CliOption("--max-shape", "max_shape", "TensorRT profile: largest input shape (default 4 x C x 2H x 2W).",
              multiple=True, metavar="NAME:NxCxHxW"),
    CliOption("--workspace", "workspace_mib", "TensorRT workspace limit in MiB (default: TensorRT's, the GPU's "
              "memory).", kind="int", metavar="MIB", low=1),
    CliOption("--builder-optimization-level", "optimization_level", "TensorRT builder optimization level 0-5 "
              "(default 3; higher builds longer).", kind="int", low=0, high=5),
    CliOption("--timing-cache", "timing_cache", "TensorRT timing cache file: read if present, updated after the "
              "build.", kind="file"),
    CliOption("--version-compatible", "version_compatible", "TensorRT: an engine later TensorRT versions can load "
              "(may be slower).", kind="flag"),
    CliOption("--hardware-compatibility", "hardware_compatibility", "TensorRT: ampere+ runs on every GPU of compute "
              "capability 8.0+ (may be slower; default none: this GPU's compute capability).", kind="choice",
              choices=HARDWARE_LEVELS),
    CliOption("--require-precision", "require_precision", "TensorRT: fail unless this share (e.g. 0.9) of the "
              "engine's FLOPs runs in the requested precision, per the engine inspector's precision audit.",
              kind="float", metavar="SHARE", low=0, high=1, low_open=True),
)


def availability() -> Availability:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        if not_installed(exc, "tensorrt"):
            return Availability("not installed",
                                reason="pip install 'deploykit[tensorrt]' on a machine with an NVIDIA GPU")
        return Availability("unusable", reason=f"import tensorrt failed: {first_line(exc)}; reinstall TensorRT")
    except (Exception, SystemExit) as exc:  # a broken install (missing libnvinfer) raises OSError and others
        return Availability("unusable", reason=f"import tensorrt failed: {first_line(exc)}")
    version = str(getattr(trt, "__version__", ""))
    try:
        builder = trt.Builder(process_logger(trt))  # TensorRT keeps the first logger it is given
    except Exception as exc:  # pybind11 raises TypeError/RuntimeError without a CUDA driver
        return Availability("unusable", version, f"cannot construct a builder: {first_line(exc)}")
    if builder is None:
        return Availability("unusable", version, "trt.Builder returned None (no CUDA device?)")
    return Availability("ready", version)


def preflight(model: onnx.ModelProto, source: str) -> None:
    """Fail on what TensorRT cannot parse before a slow precision pass."""
    lint_or_fail(model, source)


def as_deployed(model: onnx.ModelProto, *, threads: int | None, optimize: bool,
                float_source: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """TensorRT compiles the Q/DQ graph as it is; ONNX Runtime simulating it is the closest CPU stand-in."""
    return model


def compile(graph: Path, out: Path, options: Options | None, *, precision: str, force: bool, threads: int | None,
            progress: Progress, float_source: onnx.ModelProto | None = None) -> Compiled:
    written = engine_from_onnx(graph, out, options, precision=precision, force=force, progress=progress,
                               write_sidecar=False)
    audit = written.build_options.get("precision_audit")
    return Compiled(backend_version=written.backend_version, device=dict(written.device),
                    build_options=dict(written.build_options), artifact_sha256=written.artifact_sha256,
                    notes=(PrecisionAudit.from_dict(audit).describe(),) if audit else ())


def open(artifact: Path, sidecar: Sidecar | None, *, providers: Sequence[str] = ("cpu",),
         threads: int | None = None) -> Runner:
    return TensorRTRunner.from_artifact(artifact)
