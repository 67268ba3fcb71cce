"""TensorRT engines: `engine_from_onnx` builds one (with its sidecar), `TensorRTRunner` runs one.

Written against NVIDIA's documented TensorRT 10.x / 11.x Python API, using only calls valid in both:
- precision comes from the ONNX (FP16 casts/initializers, INT8 Q/DQ from deploykit's precision pass) and the
  network is strongly typed: `create_network(1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED))`, no
  precision builder flags (BuilderFlag.FP16/INT8, calibrators and EXPLICIT_BATCH are gone in 11.x);
- `OnnxParser.parse_from_file`, errors from `get_error(i)` with `node_name()`, `desc()`, `code()`;
- one optimization profile (`set_shape(name, min, opt, max)`) covering the ONNX's dynamic dimensions;
- `set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)`, `builder_optimization_level`;
- a timing cache read with `create_timing_cache(bytes)` + `set_timing_cache(cache, False)` and written back
  from `get_timing_cache().serialize()`, never over a cache TensorRT refused (timing_cache.py);
- TensorRT's warnings during the build are printed and kept in the sidecar ("tensorrt_warnings");
- `BuilderFlag.VERSION_COMPATIBLE`, `HardwareCompatibilityLevel.AMPERE_PLUS`;
- `build_serialized_network(network, config)`, which returns None on failure;
- `config.profiling_verbosity = ProfilingVerbosity.DETAILED`, so the engine inspector can tell the precision of
  every layer (deploykit.backends.tensorrt.audit): the audit is printed, stored in the sidecar (build_options
  and precision_report "tensorrt_audit"), and `require_precision` fails a build that realised too little.
TensorRT is imported lazily, and it counts as available only when a builder can be constructed (`import
tensorrt` works without a CUDA driver, `trt.Builder` does not).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

import deploykit
from deploykit.backends.tensorrt import device as trt_device
from deploykit.backends.tensorrt.audit import PrecisionAudit, inspect_plan, require_precision
from deploykit.backends.tensorrt.common import (
    HARDWARE_LEVELS,
    check_engine_compatibility,
    import_tensorrt,
    process_logger,
)
from deploykit.backends.tensorrt.runner import TensorRTRunner
from deploykit.backends.tensorrt.shapes import (
    Shape,
    ShapeRange,
    derive_profile,
    fit_default_min,
    follow_size_rule,
    parse_shape_specs,
    pin_channels,
)
from deploykit.backends.tensorrt.timing_cache import TimingCacheRecord, save_timing_cache, use_timing_cache
from deploykit.errors import BackendUnavailable, BuildError, ConfigConflict, UnknownModel, first_line
from deploykit.graph.lint import float_remainder, lint_model
from deploykit.graph.unpool import rewrite_unpooling
from deploykit.io.digests import sha256_file
from deploykit.io.metadata import ModelMetadata, read_metadata
from deploykit.io.model_files import read_onnx
from deploykit.io.output_checks import check_output_path
from deploykit.io.outputs import atomic_output, scratch_folder, write_json
from deploykit.io.sidecar import Sidecar, sidecar_path
from deploykit.runner import InputSizes
from deploykit.types import Progress
from deploykit.zoo import get_model_spec

if TYPE_CHECKING:
    from deploykit.graph.lint import LintReport

__all__ = ["TensorRTBuildOptions", "TensorRTRunner", "check_engine_compatibility", "engine_from_onnx",
           "lint_or_fail"]

MIB = 1 << 20
WARNINGS_KEPT = 50  # TensorRT warnings recorded in the sidecar (all are printed)


@dataclass(frozen=True)
class TensorRTBuildOptions:
    """How to build. None means TensorRT's own default (workspace: the GPU's memory; optimization level 3)."""

    min_shapes: Mapping[str, Shape] = field(default_factory=dict)  # input name ("" = the only input) -> shape
    opt_shapes: Mapping[str, Shape] = field(default_factory=dict)
    max_shapes: Mapping[str, Shape] = field(default_factory=dict)
    workspace_mib: int | None = None
    optimization_level: int | None = None  # builder_optimization_level 0-5
    timing_cache: str | None = None  # file read if present, and written back after the build
    version_compatible: bool = False
    hardware_compatibility: str = "none"  # "none" | "ampere+"
    lint: bool = True  # run deploykit's TensorRT lint first and stop on its errors
    require_precision: float | None = None  # fail unless this share (0-1) of FLOPs runs in the graph's precision

    @classmethod
    def from_cli(cls, *, min_shape: Sequence[str] = (), opt_shape: Sequence[str] = (), max_shape: Sequence[str] = (),
                 **kwargs: Any) -> TensorRTBuildOptions:
        """Options from command-line text: shapes as NAME:NxCxHxW (NAME may be left out for one input)."""
        return cls(min_shapes=parse_shape_specs(min_shape, "--min-shape"),
                   opt_shapes=parse_shape_specs(opt_shape, "--opt-shape"),
                   max_shapes=parse_shape_specs(max_shape, "--max-shape"),
                   **{k: v for k, v in kwargs.items() if v is not None})

    def validate(self) -> None:
        if self.hardware_compatibility not in HARDWARE_LEVELS:
            raise ConfigConflict(f"--hardware-compatibility {self.hardware_compatibility!r}: choose one of "
                                 f"{', '.join(HARDWARE_LEVELS)}")
        if self.optimization_level is not None and not 0 <= self.optimization_level <= 5:
            raise ConfigConflict(f"builder optimization level {self.optimization_level} is outside 0-5 (default 3)")
        if self.require_precision is not None and not 0 < self.require_precision <= 1:
            raise ConfigConflict(f"--require-precision {self.require_precision} must be a share in (0, 1], e.g. 0.9")
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise ConfigConflict(f"workspace {self.workspace_mib} MiB must be positive")

    def check_model(self, model: onnx.ModelProto) -> None:
        """Raise on profile shapes `model` contradicts, before a slow precision pass (Backend.preflight)."""
        self.validate()
        profile_for(model, self, lambda _msg: None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("min_shapes", "opt_shapes", "max_shapes"):
            data[key] = {k: list(v) for k, v in data[key].items()}
        return data


def _size_multiple(meta: ModelMetadata | None) -> int:
    if meta is None:
        return 1

    try:
        return get_model_spec(meta.model).size_multiple
    except UnknownModel:  # a user factory: no known multiple
        return 1


def profile_for(model: onnx.ModelProto, options: TensorRTBuildOptions, say: Progress) -> dict[str, ShapeRange]:
    """The optimization profile of `model` under `options`' shapes, fitted to the model's size rule."""
    meta = read_metadata(model)
    profile = derive_profile(model, min_shapes=options.min_shapes, opt_shapes=options.opt_shapes,
                             max_shapes=options.max_shapes, input_size=meta.input_size if meta else None,
                             size_multiple=_size_multiple(meta))
    return follow_size_rule(profile, _given_labels(options, profile), InputSizes.of(meta).rule, say)


def _given_labels(options: TensorRTBuildOptions, profile: Mapping[str, ShapeRange]) -> dict[str, list[str]]:
    """Input name -> the profile shapes (min, opt, max) the user gave for it ("" names the only input)."""
    given: dict[str, list[str]] = {}
    for label, shapes in (("min", options.min_shapes), ("opt", options.opt_shapes), ("max", options.max_shapes)):
        for name in profile:
            if name in shapes or "" in shapes:
                given.setdefault(name, []).append(label)
    return given


def lint_or_fail(model: onnx.ModelProto, source: str) -> LintReport:
    """deploykit's TensorRT lint; a BuildError naming the nodes, why and the fix when it finds errors."""
    report = lint_model(model, target="tensorrt", source=source)
    if report.errors:
        listed = "; ".join(f"{f.node} ({f.op}): {f.why} -> {f.fix}" for f in report.errors[:5])
        more = f" (and {len(report.errors) - 5} more)" if len(report.errors) > 5 else ""
        raise BuildError(f"{source} will not build with TensorRT: {listed}{more}; "
                         f"`deploykit lint {source}` lists every finding")
    return report


def _lint_and_rewrite(model: onnx.ModelProto, source: str, say: Progress) -> tuple[onnx.ModelProto, list[str]]:
    """Stop on lint errors; rewrite the unpooling TensorRT cannot parse when deploykit can (lint says so)."""
    report = lint_or_fail(model, source)
    if any(f.rule == "unpooling" for f in report.findings):
        say("rewriting max-pool switches/unpooling into operators TensorRT parses")
        return rewrite_unpooling(model), ["unpooling"]
    return model, []


def _float_remainder(model: onnx.ModelProto, say: Progress) -> dict[str, Any] | None:
    """What an INT8 graph runs outside its INT8 ops (the precision pass's --int8-float choice, read from the
    graph TensorRT compiles), said and recorded; None for graphs without Q/DQ."""
    remainder = float_remainder(model)
    if remainder is None:
        return None
    note = ("; `--int8-float fp16` runs them in FP16 (faster, less accurate)" if not remainder.half else "")
    say(f"{remainder.describe()}{note}")
    return remainder.to_dict()


def _builder(trt: Any, logger: Any, mark: int) -> Any:
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # pybind11 raises TypeError/RuntimeError when CUDA cannot initialise
        raise BackendUnavailable(
            f"TensorRT {getattr(trt, '__version__', '')} cannot construct a builder "
            f"({first_line(exc)}; {logger.said(mark)}): it needs an NVIDIA GPU and driver; "
            "`deploykit doctor` shows what this machine has") from exc
    if builder is None:
        raise BackendUnavailable(f"trt.Builder returned None ({logger.said(mark)}); is a CUDA device visible?")
    return builder


def _parse(trt: Any, builder: Any, logger: Any, mark: int, path: Path) -> tuple[Any, Any]:
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    if network is None:
        raise BuildError(f"TensorRT could not create a strongly typed network: {logger.said(mark)}")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            code = error.code()
            errors.append(f"node {error.node_name() or '#' + str(error.node())} ({error.node_operator()}): "
                          f"{getattr(code, 'name', code)}: {error.desc()}")
        raise BuildError(f"TensorRT's ONNX parser rejected the model: {'; '.join(errors) or logger.said(mark)}")
    return network, parser


def _configure(trt: Any, builder: Any, options: TensorRTBuildOptions,
               profile: Mapping[str, ShapeRange]) -> Any:
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # per-layer types for the precision audit
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib * MIB)
    if options.optimization_level is not None:
        config.builder_optimization_level = options.optimization_level
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatibility == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if profile:
        trt_profile = builder.create_optimization_profile()
        for name, rng in profile.items():
            trt_profile.set_shape(name, rng.min, rng.opt, rng.max)
        if config.add_optimization_profile(trt_profile) < 0:
            raise BuildError(f"TensorRT rejected the optimization profile {dict(profile)}")
    return config


@dataclass
class _Record:
    """What a build learnt besides the plan, for the sidecar's build_options."""

    rewrites: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timing_cache: TimingCacheRecord | None = None
    float_remainder: dict[str, Any] | None = None
    audit: PrecisionAudit | None = None

    def to_dict(self) -> dict[str, Any]:
        audit = self.audit.to_dict() if self.audit is not None else None
        return {"graph_rewrites": self.rewrites, "tensorrt_warnings": self.warnings[:WARNINGS_KEPT],
                "timing_cache_record": self.timing_cache.to_dict() if self.timing_cache else None,
                "float_remainder": self.float_remainder, "precision_audit": audit}


def engine_from_onnx(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: TensorRTBuildOptions | None = None,
    *,
    precision: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    write_sidecar: bool = True,
) -> Sidecar:
    """Build a TensorRT engine from `onnx_path` and write it with its sidecar to `out` (both atomically).
    With write_sidecar=False (deploykit.build, which writes the complete sidecar once) only the engine.
    `precision`: what the graph computes in (deploykit.build passes what it detected; default: what the graph's
    deploykit metadata records, fp32 without any), which --require-precision checks and the sidecar records."""
    say = progress or (lambda _msg: None)
    options = options or TensorRTBuildOptions()
    options.validate()
    check_output_path(out, force=force)
    if write_sidecar:
        check_output_path(sidecar_path(out), force=force)
    model = read_onnx(onnx_path)
    meta = read_metadata(model)
    precision = precision or (meta.precision if meta is not None else "fp32")
    profile = profile_for(model, options, say)
    record = _Record()
    if options.lint:
        model, record.rewrites = _lint_and_rewrite(model, str(onnx_path), say)
    pinned = pin_channels(model)
    for message in pinned:
        say(message)
    record.rewrites += ["channels"] if pinned else []
    record.float_remainder = _float_remainder(model, say)
    trt = import_tensorrt()
    logger = process_logger(trt)
    mark = logger.mark()
    builder = _builder(trt, logger, mark)
    # A min shape the user gave ("" names the only input) is kept as given; defaulted ones are checked.
    defaulted = [] if "" in options.min_shapes else [n for n in profile if n not in options.min_shapes]
    profile = fit_default_min(model, profile, defaulted, say)
    device = trt_device.default_device().info()
    plan = _build_plan(trt, builder, logger, mark, model, Path(onnx_path), options, profile, record, device, say)
    record.audit = _audit(trt, logger, plan, profile, options.version_compatible, say)
    if options.require_precision is not None:
        require_precision(record.audit, precision, options.require_precision, str(onnx_path))
    return _write(plan, out, onnx_path, precision, meta, options, profile, record, trt, device, force=force,
                  write_sidecar=write_sidecar)


def _build_plan(trt: Any, builder: Any, logger: Any, mark: int, model: onnx.ModelProto, onnx_path: Path,
                options: TensorRTBuildOptions, profile: Mapping[str, ShapeRange], record: _Record,
                device: trt_device.DeviceInfo, say: Progress) -> bytes:
    """Parse, configure and build; TensorRT's warnings are shown (and recorded), not only kept for errors."""
    with scratch_folder("deploykit-trt-") as tmp:
        source = onnx_path
        if record.rewrites:
            source = Path(tmp) / "rewritten.onnx"
            onnx.save(model, str(source))
        say(f"parsing {onnx_path} into a strongly typed TensorRT {trt.__version__} network")
        network, _parser = _parse(trt, builder, logger, mark, source)
        config = _configure(trt, builder, options, profile)
        record.timing_cache = use_timing_cache(config, options.timing_cache, say)
        for name, rng in profile.items():
            say(f"profile {name}: {rng.describe()}")
        say(f"building the engine on {device.name} (compute capability {device.cc}); this can take minutes")
        serialized = builder.build_serialized_network(network, config)
    record.warnings = logger.warned(mark)
    for warning in record.warnings:
        say(f"TensorRT warning: {warning}")
    if serialized is None:
        raise BuildError(f"TensorRT failed to build an engine from {onnx_path}: {logger.said(mark)}")
    save_timing_cache(config, record.timing_cache, say)
    return memoryview(serialized).tobytes()


def _audit(trt: Any, logger: Any, plan: bytes, profile: Mapping[str, ShapeRange], version_compatible: bool,
           say: Progress) -> PrecisionAudit | None:
    """The precision audit of the built plan, inspected at the profile's opt shapes as the runner would load it
    (a version-compatible plan needs host code allowed); None (said why) when it cannot be deserialized here
    (the audit is a report: only --require-precision makes it a gate)."""
    try:
        inspection = inspect_plan(trt, logger, plan, {n: r.opt for n, r in profile.items()},
                                  version_compatible=version_compatible)
    except BuildError as exc:
        say(f"precision audit skipped: {exc}")
        return None
    say(inspection.audit.describe())
    return inspection.audit


def _write(plan: bytes, out: str | os.PathLike[str], onnx_path: str | os.PathLike[str], precision: str,
           meta: ModelMetadata | None, options: TensorRTBuildOptions, profile: Mapping[str, ShapeRange],
           record: _Record, trt: Any, device: trt_device.DeviceInfo, *, force: bool, write_sidecar: bool) -> Sidecar:
    """The engine and its sidecar, each written atomically; the sidecar's hash ties it to this engine. The audit
    goes into build_options (which deploykit.build carries into the final sidecar) and precision_report."""
    build_options = {**options.to_dict(), "profile": {n: r.to_dict() for n, r in profile.items()},
                     "strongly_typed": True, **record.to_dict()}
    audit_record = build_options["precision_audit"]
    sidecar = Sidecar(
        backend="tensorrt", precision=precision, artifact_sha256=hashlib.sha256(plan).hexdigest(),
        source_onnx_sha256=sha256_file(onnx_path), deploykit_version=deploykit.__version__,
        backend_version=str(trt.__version__),
        device={"gpu": device.name, "compute_capability": device.cc, "index": device.index},
        build_options=build_options, model=meta.to_record() if meta else {},
        precision_report={"tensorrt_audit": audit_record} if audit_record else {},
    )
    with atomic_output(out, force=force) as tmp:
        tmp.write_bytes(plan)
        if write_sidecar:
            write_json(sidecar_path(out), sidecar.to_dict(), force=force)
    return sidecar
