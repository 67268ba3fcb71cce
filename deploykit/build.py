"""build-engine: precision pass (ONNX -> FP16 or INT8 Q/DQ ONNX), then the chosen backend's compile step.

Outputs, beside OUT:
- OUT: the artifact (ONNX Runtime: the ORT-optimized model; TensorRT: the engine);
- OUT + ".deploykit.json": the sidecar every later command loads the artifact through;
- <OUT stem>.fp16.onnx / <OUT stem>.int8.onnx: the precision graph, backend-independent (TensorRT compiles it).
Defaults, documented once here: precision fp32; backend "auto" = TensorRT where a builder can be constructed,
else ONNX Runtime; INT8 calibration method minmax on up to 64 inputs; FP16 overflow scan on scikit-image's
photographs when no --calib-data is given; accuracy-budget hold-out = a quarter of the data (1 to 8 inputs).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

import deploykit
from deploykit.errors import BackendUnavailable, ConfigConflict, InputError
from deploykit.io.metadata import ModelMetadata, read_metadata
from deploykit.io.outputs import atomic_output, check_output_path, sha256_file, write_json
from deploykit.io.sidecar import Sidecar, sidecar_path
from deploykit.precision.passes import CalibrationOptions, PrecisionResult, fp16_graph, int8_graph
from deploykit.types import Progress

PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("auto", "onnxruntime", "tensorrt")
CPU_FLAGS = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


@dataclass
class BuildResult:
    path: Path
    sidecar: Sidecar
    backend: str
    backend_note: str  # why this backend
    precision: str
    precision_onnx: Path | None  # the FP16 / INT8 graph kept beside the artifact
    report: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.path)


def resolve_backend(backend: str | None) -> tuple[str, str]:
    """(backend, one-line reason). "auto" picks TensorRT only where a builder can be constructed."""
    from deploykit.environment import tensorrt_status

    chosen = backend or "auto"
    if chosen not in BACKENDS:
        raise ConfigConflict(f"unknown backend {chosen!r}; choose one of {', '.join(BACKENDS)}")
    if chosen == "onnxruntime":
        return "onnxruntime", "ONNX Runtime (asked for)"
    status = tensorrt_status()
    if chosen == "tensorrt":
        if status.state != "ready":
            raise BackendUnavailable(f"TensorRT is {status.state} here ({status.reason}); build with "
                                     "--backend onnxruntime, or on a machine with an NVIDIA GPU and TensorRT")
        return "tensorrt", f"TensorRT {status.version} (asked for)"
    if status.state == "ready":
        return "tensorrt", f"TensorRT {status.version} (found a working builder)"
    return "onnxruntime", f"ONNX Runtime, the default here: TensorRT is {status.state} ({status.reason})"


def precision_path(out: str | os.PathLike[str], precision: str) -> Path:
    """Where the precision graph goes: OUT's name without .onnx/.ort/.plan/.engine/.<precision>, plus
    .<precision>.onnx, beside OUT (model.int8.ort.onnx -> model.int8.onnx)."""
    out = Path(out)
    stem = out.name
    suffixes = (".onnx", ".ort", ".plan", ".engine", f".{precision}")
    while any(stem.endswith(s) and len(stem) > len(s) for s in suffixes):
        stem = next(stem[: -len(s)] for s in suffixes if stem.endswith(s) and len(stem) > len(s))
    path = out.with_name(f"{stem}.{precision}.onnx")
    return path if path != out else out.with_name(f"{stem}.{precision}.graph.onnx")


def _load_source(onnx_path: str | os.PathLike[str]) -> onnx.ModelProto:
    path = Path(onnx_path)
    if not path.is_file():
        raise InputError(f"ONNX model {path} does not exist; export one with `deploykit export`")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf and onnx raise various types
        raise InputError(f"{path} is not a readable ONNX model ({exc})") from exc


def _check_options(precision: str, *, keep_fp32: Sequence[str], keep_float: Sequence[str], fp16_io: bool,
                   accuracy_budget: Sequence[str]) -> None:
    if precision not in PRECISIONS:
        raise ConfigConflict(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "fp16" and (keep_fp32 or fp16_io):
        raise ConfigConflict("--keep-fp32 and --fp16-io apply to --fp16 builds only")
    if precision != "int8" and keep_float:
        raise ConfigConflict("--keep-float applies to --int8 builds only (--keep-fp32 is its --fp16 twin)")
    if precision == "fp32" and accuracy_budget:
        raise ConfigConflict("--accuracy-budget applies to --fp16 and --int8 builds")


def _write_model(model: onnx.ModelProto, path: Path, *, force: bool) -> None:
    with atomic_output(path, force=force) as tmp:
        onnx.save(model, str(tmp))


def _device() -> dict[str, Any]:
    from deploykit.environment import cpu_flags, cpu_model

    flags = cpu_flags()
    return {"cpu": cpu_model(), "cpu_flags": [f for f in CPU_FLAGS if f in flags],
            "providers": ["CPUExecutionProvider"]}


def _compile_onnxruntime(graph: Path, out: Path, *, force: bool, threads: int | None,
                         tensorrt_options: Mapping[str, Any] | None, progress: Progress,
                         float_source: Path | None = None) -> dict[str, Any]:
    from deploykit.backends.onnxruntime.compile import OPTIMIZATION, needs_seven_bit_weights, ort_model_from_onnx

    if tensorrt_options:
        raise ConfigConflict(f"TensorRT options ({', '.join(tensorrt_options)}) do not apply to --backend "
                             "onnxruntime")
    progress(f"compiling with ONNX Runtime (optimization level {OPTIMIZATION}, portable across CPUs)")
    seven_bit = needs_seven_bit_weights()
    lowered = ort_model_from_onnx(graph, out, force=force, threads=threads, seven_bit=seven_bit,
                                  float_source=float_source)
    import onnxruntime

    lowering = {"uint8_activations": lowered.unsigned, "seven_bit_weights": lowered.seven_bit,
                "seven_bit_from_float": lowered.seven_bit_from_float}
    if lowered.seven_bit:
        progress("INT8 weights quantized to 7 bits for ONNX Runtime: this CPU has no VNNI (see "
                 "deploykit.backends.onnxruntime.weights)")
    return {"backend_version": onnxruntime.__version__, "device": _device(),
            "build_options": {"optimization_level": OPTIMIZATION, "int8_lowering": lowering}}


def _compile_tensorrt(graph: Path, out: Path, *, force: bool, threads: int | None,
                      tensorrt_options: Mapping[str, Any] | None, progress: Progress,
                      float_source: Path | None = None) -> dict[str, Any]:
    from deploykit.backends.base import BACKENDS as RUNNER_BACKENDS

    module = RUNNER_BACKENDS["tensorrt"].load()
    options = module.TensorRTBuildOptions.from_cli(**dict(tensorrt_options or {}))
    written: Sidecar = module.engine_from_onnx(graph, out, options, force=force, progress=progress)
    return {"backend_version": written.backend_version, "device": dict(written.device),
            "build_options": dict(written.build_options), "artifact_sha256": written.artifact_sha256}


# One flat table: backend -> compile step (the precision graph in, the artifact out).
COMPILERS: dict[str, Callable[..., dict[str, Any]]] = {
    "onnxruntime": _compile_onnxruntime,
    "tensorrt": _compile_tensorrt,
}


def _precision_graph(source: onnx.ModelProto, meta: ModelMetadata | None, source_sha: str, precision: str,
                     backend: str, calibration: CalibrationOptions, *, keep_fp32: Sequence[str],
                     keep_float: Sequence[str], fp16_io: bool, budget: Sequence[str], qdq_layout: str | None,
                     threads: int | None, progress: Progress) -> PrecisionResult:
    if precision == "fp16":
        return fp16_graph(source, meta, source_sha, calibration, keep=keep_fp32, fp16_io=fp16_io,
                          accuracy_budget=budget, backend=backend, threads=threads, progress=progress)
    layout = qdq_layout or ("inputs" if backend == "tensorrt" else "inputs+outputs")
    return int8_graph(source, meta, source_sha, calibration, keep_float=keep_float, accuracy_budget=budget,
                      layout=layout, backend=backend, threads=threads, progress=progress)


def build_artifact(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    backend: str | None = None,
    calibration: CalibrationOptions | None = None,
    keep_fp32: Sequence[str] = (),
    keep_float: Sequence[str] = (),
    fp16_io: bool = False,
    accuracy_budget: str | Sequence[str] | None = None,
    qdq_layout: str | None = None,
    tensorrt_options: Mapping[str, Any] | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """Build OUT from `onnx_path` at `precision` for `backend`; write the artifact, its sidecar and the
    precision graph. Raises a DeployKitError (nothing half-written is left) when any step fails."""
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    budget = [accuracy_budget] if isinstance(accuracy_budget, str) else list(accuracy_budget or ())
    _check_options(precision, keep_fp32=keep_fp32, keep_float=keep_float, fp16_io=fp16_io,
                   accuracy_budget=budget)
    out_path = check_output_path(out, force=force)
    check_output_path(sidecar_path(out_path), force=force)
    chosen, note = resolve_backend(backend)
    source = _load_source(onnx_path)
    if chosen == "tensorrt":  # fail on what TensorRT cannot parse before a slow precision pass
        from deploykit.backends.tensorrt.build import lint_or_fail

        lint_or_fail(source, str(onnx_path))
    meta = read_metadata(source)
    graph_path = Path(onnx_path)
    result: PrecisionResult | None = None
    transformed: Path | None = None
    if precision != "fp32":
        transformed = precision_path(out_path, precision)
        check_output_path(transformed, force=force)
        result = _precision_graph(source, meta, sha256_file(onnx_path), precision, chosen,
                                  calibration or CalibrationOptions(), keep_fp32=keep_fp32, keep_float=keep_float,
                                  fp16_io=fp16_io, budget=budget, qdq_layout=qdq_layout, threads=threads,
                                  progress=say)
        _write_model(result.model, transformed, force=force)
        graph_path = transformed
        say(f"wrote the {precision} graph {transformed}")
    try:
        compiled = COMPILERS[chosen](graph_path, out_path, force=force, threads=threads,
                                     tensorrt_options=tensorrt_options, progress=say,
                                     float_source=Path(onnx_path) if transformed is not None else None)
    except BaseException as exc:
        if transformed is not None:
            transformed.unlink(missing_ok=True)  # no precision graph without its artifact
        if isinstance(exc, ImportError):
            raise BackendUnavailable(f"the {chosen} backend cannot be loaded here: {exc}") from exc
        raise
    sidecar = _sidecar(out_path, onnx_path, graph_path, meta, precision, chosen, compiled, result,
                       keep_fp32=keep_fp32, keep_float=keep_float, fp16_io=fp16_io, threads=threads)
    write_json(sidecar_path(out_path), sidecar.to_dict(), force=True)  # ours: written (or replaced) last
    sidecar = Sidecar.from_dict(json.loads(json.dumps(sidecar.to_dict(), default=str)))  # as later loads see it
    report = dict(sidecar.precision_report)
    return BuildResult(path=out_path, sidecar=sidecar, backend=chosen, backend_note=note, precision=precision,
                       precision_onnx=transformed, report=report, seconds=time.perf_counter() - started)


def _sidecar(out: Path, source: str | os.PathLike[str], graph: Path, meta: ModelMetadata | None, precision: str,
             backend: str, compiled: Mapping[str, Any], result: PrecisionResult | None, *,
             keep_fp32: Sequence[str], keep_float: Sequence[str], fp16_io: bool, threads: int | None) -> Sidecar:
    options: dict[str, Any] = {
        **dict(compiled.get("build_options", {})),
        "onnx_path": str(graph), "source_onnx": str(source), "precision": precision, "threads": threads,
    }
    if precision == "fp16":
        options.update(fp16_io=fp16_io, keep_fp32=list(keep_fp32))
    if precision == "int8":
        options.update(keep_float=list(keep_float))
    report: dict[str, Any] = {}
    calibration_sha = ""
    if result is not None:
        options["calibration"] = result.calibration
        report = {**result.report, "precision_onnx": str(graph), "precision_onnx_sha256": sha256_file(graph)}
        calibration_sha = result.calibration_sha256
    built_meta = replace(meta, precision=precision) if meta is not None else None
    return Sidecar(
        backend=backend, precision=precision,
        artifact_sha256=str(compiled.get("artifact_sha256") or sha256_file(out)),
        source_onnx_sha256=sha256_file(source), deploykit_version=deploykit.__version__,
        backend_version=str(compiled["backend_version"]), device=dict(compiled["device"]),
        build_options=options, calibration_sha256=calibration_sha, precision_report=report,
        model=built_meta.to_record() if built_meta else {},
    )
