"""build-engine: precision pass (ONNX -> FP16 or INT8 Q/DQ ONNX), then the chosen backend's compile step.

Outputs, beside OUT:
- OUT: the artifact (ONNX Runtime: the ORT-optimized model; TensorRT: the engine; OpenVINO: the IR .xml, with
  the files its table entry lists as companions beside it, its .bin);
- OUT + ".deploykit.json": the sidecar every later command loads the artifact through, written once, last;
- <OUT stem>.fp16.onnx / <OUT stem>.int8.onnx: the precision graph, backend-independent (TensorRT compiles it).
Defaults, documented once here: precision fp32 (deploykit.precision.table.DEFAULT); no backend = the ready
backend of highest rank in deploykit.backends.base.BACKENDS (TensorRT where a builder can be constructed, else
ONNX Runtime); an explicit "auto" on a CPU builds every ready CPU backend's artifact and keeps the fastest,
measured on the model (the `racer` deploykit.targets.race.choose_backend gives; the artifact's suffix becomes the
winner's, e.g. OUT.xml); Q/DQ layout: the backend's entry; INT8 calibration method minmax on up to 64 inputs; FP16
overflow scan on scikit-image's photographs when no --calib-data is given; accuracy-budget hold-out = up to 8
inputs beyond --calib-n where the data has as many as a quarter of --calib-n, else a quarter of --calib-n (1 to 8).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import onnx

import deploykit
from deploykit.backends.base import FILE_SUFFIXES, Backend, Compiled, require_ready, resolve_backend
from deploykit.errors import BackendUnavailable
from deploykit.graph.macs import graph_inputs
from deploykit.graph.tensors import inline_functions
from deploykit.io.digests import sha256_file
from deploykit.io.metadata import ModelMetadata, read_metadata
from deploykit.io.model_files import read_onnx, require_one_input
from deploykit.io.output_checks import check_output_path
from deploykit.io.outputs import atomic_output, staged, write_json
from deploykit.io.sidecar import Sidecar, sidecar_path
from deploykit.precision.passes import CalibrationOptions, PrecisionResult
from deploykit.precision.table import (
    DEFAULT,
    GraphRequest,
    Precision,
    check_build_options,
    detect_precision,
    kept_nodes,
    precision_of,
)
from deploykit.types import Progress


@dataclass(frozen=True)
class Chosen:
    """What a Racer built and kept: the backend, where its artifact is, its compile facts, and why."""

    backend: Backend
    path: Path
    compiled: Compiled
    note: str


class Racer(Protocol):
    """Compiles the precision graph with several backends and keeps one (deploykit.targets.race.Race: `--backend
    auto` on a CPU, measured on the model)."""

    def check_outputs(self, out: Path, *, force: bool) -> None: ...

    def __call__(self, graph: Path, out: Path, *, input_size: tuple[int, int] | None, precision: str, force: bool,
                 threads: int | None, progress: Progress, float_source: onnx.ModelProto | None) -> Chosen: ...


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
    notes: list[str] = field(default_factory=list)  # what the backend tells the user (Compiled.notes)

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.path)

    @property
    def graph(self) -> Path:
        """The ONNX graph the artifact was compiled from: the precision graph, else the source ONNX."""
        return self.precision_onnx or Path(str(self.sidecar.build_options.get("source_onnx", self.path)))

    @property
    def kept(self) -> list[dict[str, Any]]:
        """The nodes the precision pass kept in higher precision."""
        return kept_nodes(self.report)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (build-engine --json and deploy's build.<precision>.json)."""
        return {"path": str(self.path), "sidecar": str(self.sidecar_path), "backend": self.backend,
                "backend_note": self.backend_note, "precision": self.precision,
                "precision_onnx": str(self.precision_onnx) if self.precision_onnx else None,
                "report": self.report, "seconds": round(self.seconds, 2), "notes": self.notes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildResult:
        """Rebuild from to_dict's form; the sidecar is read from beside the artifact."""
        path = Path(data["path"])
        sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8")) if sidecar_path(path).is_file() else {}
        onnx_path = data.get("precision_onnx") if precision_of(str(data["precision"])).lowered else None
        return cls(path=path, sidecar=Sidecar.from_dict(sidecar) if sidecar else _empty_sidecar(data),
                   backend=str(data["backend"]), backend_note=str(data.get("backend_note", "")),
                   precision=str(data["precision"]), precision_onnx=Path(onnx_path) if onnx_path else None,
                   report=dict(data.get("report") or {}), seconds=float(data.get("seconds", 0.0)),
                   notes=list(data.get("notes") or []))


def _empty_sidecar(data: Mapping[str, Any]) -> Sidecar:
    return Sidecar(backend=str(data["backend"]), precision=str(data["precision"]), artifact_sha256="",
                   source_onnx_sha256="", deploykit_version="", backend_version="", device={}, build_options={})


def precision_path(out: str | os.PathLike[str], precision: str) -> Path:
    """Where the precision graph goes: OUT's name without .onnx/.ort/.plan/.engine/.<precision>, plus
    .<precision>.onnx, beside OUT (model.int8.ort.onnx -> model.int8.onnx)."""
    out = Path(out)
    stem = out.name
    suffixes = (*FILE_SUFFIXES, f".{precision}")
    while any(stem.endswith(s) and len(stem) > len(s) for s in suffixes):
        stem = next(stem[: -len(s)] for s in suffixes if stem.endswith(s) and len(stem) > len(s))
    path = out.with_name(f"{stem}.{precision}.onnx")
    return path if path != out else out.with_name(f"{stem}.{precision}.graph.onnx")


def _write_model(model: onnx.ModelProto, path: Path, *, force: bool) -> None:
    with atomic_output(path, force=force, needs=model.ByteSize()) as tmp:
        onnx.save(model, str(tmp))


def build_artifact(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    precision: Precision = DEFAULT,
    backend: Backend | None = None,
    backend_note: str = "",
    calibration: CalibrationOptions | None = None,
    keeps: Mapping[str, Sequence[str]] | None = None,
    fp16_io: bool = False,
    accuracy_budget: str | Sequence[str] | None = None,
    qdq_layout: str | None = None,
    options: object | None = None,
    threads: int | None = None,
    force: bool = False,
    progress: Progress | None = None,
    source: onnx.ModelProto | None = None,
    racer: Racer | None = None,
) -> BuildResult:
    """Build OUT from `onnx_path` at `precision` for `backend` (entries resolved by the caller: None is the
    table's default, see the module docstring; `backend_note` says why it was chosen); write the artifact, its
    sidecar and the precision graph. `keeps` maps a precision's keep_option to the nodes it keeps in higher
    precision; `options` is the backend's typed options (e.g. TensorRTBuildOptions), None for its defaults;
    `source` is the already loaded `onnx_path` (deploy loads it once); `racer` builds several backends'
    artifacts and keeps one (deploykit.targets.race.choose_backend). Raises a DeployKitError (nothing
    half-written is left) when any step fails."""
    say = progress or (lambda _m: None)
    started = time.perf_counter()
    entry = precision
    budget = [accuracy_budget] if isinstance(accuracy_budget, str) else list(accuracy_budget or ())
    keep = check_build_options(entry, keeps=keeps or {}, fp16_io=fp16_io, accuracy_budget=budget)
    out_path = check_output_path(out, force=force)
    check_output_path(sidecar_path(out_path), force=force)
    chosen, note = (backend, backend_note) if backend is not None else resolve_backend(None)
    require_ready(chosen)
    chosen.check_options(options)
    if racer is None:  # a race names the artifact after its winner
        chosen.check_artifact_name(out_path)
    for companion in chosen.files(out_path)[1:]:
        check_output_path(companion, force=force)
    if racer is not None:
        racer.check_outputs(out_path, force=force)
    model = source if source is not None else read_onnx(onnx_path)
    chosen.preflight(model, str(onnx_path), options)
    meta = read_metadata(model)
    source_sha = sha256_file(onnx_path)
    result: PrecisionResult | None = None
    transformed: Path | None = None
    if entry.graph_pass is not None:
        require_one_input(onnx_path, [i.name for i in graph_inputs(model)], f"the {entry.name} pass")
        transformed = precision_path(out_path, entry.name)
        check_output_path(transformed, force=force)
        # local functions inlined: the passes convert and quantize their bodies, as TensorRT imports them
        result = entry.graph_pass(GraphRequest(
            inline_functions(model), meta, source_sha, calibration or CalibrationOptions(), keep=keep,
            fp16_io=fp16_io, budget=budget, layout=qdq_layout or chosen.qdq_layout, backend=chosen, threads=threads,
            progress=say))
    graph_precision = detect_precision(result.model if result is not None else model, meta)
    # The float model the precision graph was made from (the equalized one when the pass changed it).
    float_source = (result.float_model or model) if result is not None else None
    # The precision graph, the artifact with its companions and the sidecar land together or not at all.
    with staged(out_path.parent, force=force, needs=_expected_bytes(model, result)) as stage:
        graph_path = Path(onnx_path)
        if result is not None and transformed is not None:
            graph_path = stage.path(transformed)
            _write_model(result.model, graph_path, force=True)
        try:
            if racer is not None:
                kept = racer(graph_path, stage.path(out_path), input_size=meta.input_size if meta else None,
                             precision=graph_precision, force=True, threads=threads, progress=say,
                             float_source=float_source)
                chosen, out_path, compiled, note = kept.backend, stage.final(kept.path), kept.compiled, kept.note
            else:
                compiled = chosen.compile(graph_path, stage.path(out_path), options, precision=graph_precision,
                                          force=True, threads=threads, progress=say, float_source=float_source)
        except ImportError as exc:  # a lazy import inside the backend's compile step
            raise BackendUnavailable(f"the {chosen.name} backend cannot be loaded here: {exc}") from exc
        sidecar = _sidecar(stage.path(out_path), source_sha, graph_path, transformed or Path(onnx_path), meta, entry,
                           chosen, compiled, result, keep=keep, fp16_io=fp16_io, threads=threads, source=onnx_path)
        write_json(stage.path(sidecar_path(out_path)), sidecar.to_dict(), force=True)
    if transformed is not None:
        say(f"wrote the {entry.name} graph {transformed}")
    sidecar = Sidecar.from_dict(json.loads(json.dumps(sidecar.to_dict(), default=str)))  # as later loads see it
    return BuildResult(path=out_path, sidecar=sidecar, backend=chosen.name, backend_note=note,
                       precision=entry.name, precision_onnx=transformed, report=dict(sidecar.precision_report),
                       seconds=time.perf_counter() - started, notes=list(compiled.notes))


def _expected_bytes(model: onnx.ModelProto, result: PrecisionResult | None) -> int:
    """About what a build writes, for the message when the disk fills: the artifact (about the graph's size)
    and, for FP16 / INT8, the precision graph beside it."""
    size = model.ByteSize()
    return size + (result.model.ByteSize() if result is not None else 0)


def _sidecar(out: Path, source_sha: str, graph: Path, graph_record: Path, meta: ModelMetadata | None,
             precision: Precision, backend: Backend, compiled: Compiled, result: PrecisionResult | None, *,
             keep: Sequence[str], fp16_io: bool, threads: int | None, source: str | os.PathLike[str]) -> Sidecar:
    """The sidecar of the artifact at `out` (hashed there, with its companions), compiled from `graph` (hashed),
    recorded as `graph_record`: the paths where both will be once they land."""
    options: dict[str, Any] = {
        **dict(compiled.build_options),
        "onnx_path": str(graph_record), "source_onnx": str(source), "precision": precision.name, "threads": threads,
    }
    if "fp16_io" in precision.options:
        options["fp16_io"] = fp16_io
    if precision.keep_option:
        options[precision.keep_option] = list(keep)
    report: dict[str, Any] = {}
    calibration_sha = ""
    if result is not None:
        options["calibration"] = result.calibration
        report = {**result.report, "precision_onnx": str(graph_record), "precision_onnx_sha256": sha256_file(graph)}
        calibration_sha = result.calibration_sha256
    built_meta = replace(meta, precision=precision.name) if meta is not None else None
    return Sidecar(
        backend=backend.name, precision=precision.name,
        artifact_sha256=compiled.artifact_sha256 or sha256_file(out),
        companions_sha256={suffix: sha256_file(path)
                           for suffix, path in zip(backend.companions, backend.files(out)[1:], strict=True)},
        source_onnx_sha256=source_sha, deploykit_version=deploykit.__version__,
        backend_version=str(compiled.backend_version), device=dict(compiled.device),
        build_options=options, calibration_sha256=calibration_sha, precision_report=report,
        model=built_meta.to_record() if built_meta else {},
    )
