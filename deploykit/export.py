"""torch -> ONNX: exporter choice, dynamic axes, metadata, checker, guarded simplification, verification.

The verified model is written atomically; a model that does not match PyTorch is not written at all.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import deploykit
from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.torch import TorchRunner, outputs_as_tuple
from deploykit.errors import ExportError
from deploykit.graph.heads import apply_head
from deploykit.io.metadata import ModelMetadata, write_metadata
from deploykit.io.outputs import atomic_output, check_output_path
from deploykit.parity.metrics import NumericMetrics, numeric_metrics
from deploykit.types import Progress
from deploykit.zoo.sources import LoadedModel

DEFAULT_OPSET = 18  # TensorRT 10.x parses opsets 9-24; 18 has Resize antialias fixes and ORT covers it fully


@dataclass(frozen=True)
class Tolerance:
    """An export passes when, per output, cosine >= min_cosine, nothing is NaN/Inf, and either
    max_abs <= atol + rtol * max|ref| or at most `max_outliers` of the elements lie beyond
    atol + rtol * |ref| (numpy.isclose's rule).

    The outlier share exists for argmax-like operators: where two values of a max-pool window are equal to
    float rounding, ONNX Runtime and PyTorch may pick different switches (DeconvNet's unpooling), which
    moves a handful of elements while the output as a whole is identical. An export bug moves many.
    """

    atol: float = 1e-4
    rtol: float = 1e-4
    min_cosine: float = 0.99999
    max_outliers: float = 1e-4

    def passes(self, metrics: NumericMetrics, ref_scale: float) -> bool:
        if metrics.nan or metrics.inf or not metrics.cosine >= self.min_cosine:
            return False
        return metrics.max_abs <= self.atol + self.rtol * ref_scale or metrics.beyond_tol <= self.max_outliers


@dataclass(frozen=True)
class ShapeCheck:
    input_shape: tuple[int, ...]
    outputs: dict[str, NumericMetrics]
    passed: bool


@dataclass
class ExportResult:
    path: Path
    exporter: str
    opset: int
    dynamic: bool
    input_shape: tuple[int, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    simplified: bool
    simplify_note: str
    seconds: float
    checks: list[ShapeCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def _output_shapes(loaded: LoadedModel, sample: torch.Tensor) -> list[tuple[int, ...]]:
    with torch.inference_mode():
        return [tuple(out.shape) for out in outputs_as_tuple(loaded.module(sample))]


def _output_names(loaded: LoadedModel, count: int) -> tuple[str, ...]:
    names = loaded.spec.output_names
    if len(names) == count:
        return names
    return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))


def _pin_output_dims(model: onnx.ModelProto, shapes: Sequence[tuple[int, ...]], dynamic: bool) -> None:
    """Exporters leave axes such as the class count symbolic; pin every axis that is not batch/height/width."""
    for value, shape in zip(model.graph.output, shapes, strict=True):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if dynamic and len(shape) == 4 and axis in (0, 2, 3):
                continue
            dim.Clear()
            dim.dim_value = size


def _torchscript_export(module: torch.nn.Module, sample: torch.Tensor, path: Path, *, opset: int,
                        input_names: Sequence[str], output_names: Sequence[str], dynamic: bool) -> None:
    axes: dict[str, dict[int, str]] | None = None
    if dynamic:
        axes = {name: {0: "batch", 2: "height", 3: "width"} for name in (*input_names, *output_names)}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (sample,), str(path), dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=axes, do_constant_folding=True)


def _dynamo_export(module: torch.nn.Module, sample: torch.Tensor, path: Path, *, opset: int,
                   input_names: Sequence[str], output_names: Sequence[str], dynamic: bool) -> None:
    shapes: Any = None
    if dynamic:
        dim = torch.export.Dim.DYNAMIC
        shapes = ({0: dim, 2: dim, 3: dim},)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (sample,), dynamo=True, opset_version=opset,
                                    input_names=list(input_names), output_names=list(output_names),
                                    dynamic_shapes=shapes, optimize=True, verbose=False)
        assert program is not None
        program.save(str(path))


EXPORTERS = {"torchscript": _torchscript_export, "dynamo": _dynamo_export}


def _run_exporter(name: str, loaded: LoadedModel, sample: torch.Tensor, path: Path, **kw: Any) -> None:
    try:
        EXPORTERS[name](loaded.module, sample, path, **kw)
    except Exception as exc:  # exporters raise many unrelated types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"the {name} exporter failed on {loaded.spec.name}: {first[:300]}") from exc


def _check(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"exported model fails the ONNX checker: {str(exc).splitlines()[0]}") from exc


def verification_shapes(shape: tuple[int, ...], dynamic: bool, multiple: int) -> list[tuple[int, ...]]:
    """The export shape, and for dynamic models a second one that differs in batch, height and width."""
    if not dynamic:
        return [shape, shape]
    step = max(multiple, 8)
    n, c, h, w = shape
    return [shape, (n + 1, c, h + step, w + 2 * step)]


def verify_against_torch(loaded: LoadedModel, onnx_bytes: bytes, shapes: Sequence[tuple[int, ...]],
                         tolerance: Tolerance, seed: int = 0) -> list[ShapeCheck]:
    """Run PyTorch and ONNX Runtime on the same random inputs of each shape and compare every output."""
    rng = np.random.default_rng(seed)
    checks = []
    ort_runner = OnnxRuntimeRunner(onnx_bytes)
    with ort_runner:
        input_name = ort_runner.input_specs()[0].name
        output_names = [s.name for s in ort_runner.output_specs()]
        with TorchRunner(loaded.module, input_names=(input_name,), output_names=output_names) as torch_runner:
            for shape in shapes:
                feed = {input_name: rng.standard_normal(shape).astype(np.float32)}
                expected, got = torch_runner.infer(feed), ort_runner.infer(feed)
                metrics = {name: numeric_metrics(expected[name], got[name], atol=tolerance.atol, rtol=tolerance.rtol)
                           for name in output_names}
                passed = all(tolerance.passes(metrics[n], float(np.abs(expected[n]).max())) for n in output_names)
                checks.append(ShapeCheck(tuple(shape), metrics, passed))
    return checks


def _simplify(model: onnx.ModelProto) -> onnx.ModelProto | None:
    try:
        import onnxslim
    except ImportError:
        return None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            slim: onnx.ModelProto = onnxslim.slim(model)
        except Exception:  # a simplifier failure only means we keep the unsimplified model
            return None
    return slim


def _metadata(loaded: LoadedModel, shape: tuple[int, ...], exporter: str, inputs: Sequence[str],
              outputs: Sequence[str]) -> ModelMetadata:
    spec = loaded.spec
    return ModelMetadata(
        model=spec.name, task=spec.task, num_classes=spec.num_classes, preprocessing=spec.preprocessing,
        input_size=(shape[2], shape[3]), input_names=tuple(inputs), output_names=tuple(outputs),
        options=loaded.options, exporter=exporter, weights=loaded.weights,
        versions={"deploykit": deploykit.__version__, "torch": torch.__version__, "onnx": onnx.__version__},
    )


def onnx_from_torch(
    loaded: LoadedModel,
    out: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int, int] | None = None,
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    exporter: str | None = None,
    simplify: bool = True,
    tolerance: Tolerance | None = None,
    force: bool = False,
    progress: Progress | None = None,
    head: str | None = None,
) -> ExportResult:
    """Export, check, simplify where parity holds, verify against PyTorch on two shapes, write atomically.
    `head` (graph/heads.py) is appended after verification, which compares the network's own outputs."""
    say = progress or (lambda _msg: None)
    check_output_path(out, force=force)
    tolerance = tolerance or Tolerance()
    spec = loaded.spec
    shape = input_shape or (1, 3, *spec.input_size)
    if not 7 <= opset <= 24:
        raise ExportError(f"opset {opset} is outside 7-24; use {DEFAULT_OPSET} (TensorRT 10 parses 9-24)")
    chosen = exporter or spec.exporter
    if chosen not in EXPORTERS:
        raise ExportError(f"unknown exporter {chosen!r}; choose one of {', '.join(EXPORTERS)}")
    sample = torch.randn(shape)
    try:
        input_names = spec.input_names
        output_shapes = _output_shapes(loaded, sample)
        output_names = _output_names(loaded, len(output_shapes))
    except RuntimeError as exc:
        raise ExportError(f"{spec.name} cannot run on input {list(shape)}: {str(exc).splitlines()[0]}") from exc
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deploykit-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        say(f"exporting {spec.name} with the {chosen} exporter (opset {opset}, "
            f"{'dynamic batch/height/width' if dynamic else 'static shape'})")
        kwargs = dict(opset=opset, input_names=input_names, output_names=output_names, dynamic=dynamic)
        _run_exporter(chosen, loaded, sample, raw, **kwargs)
        exported = onnx.load(str(raw))
        _pin_output_dims(exported, output_shapes, dynamic)
        model = _check(exported)
    meta = _metadata(loaded, shape, chosen, input_names, output_names)
    write_metadata(model, meta)
    shapes = verification_shapes(shape, dynamic, spec.size_multiple)
    say(f"verifying against PyTorch on shapes {', '.join('x'.join(map(str, s)) for s in shapes)}")
    checks = verify_against_torch(loaded, model.SerializeToString(), shapes, tolerance)
    simplified, note = False, "simplification off"
    if simplify:
        slim = _simplify(model)
        if slim is None:
            note = "onnxslim not installed or failed; kept the exported graph"
        else:
            write_metadata(slim, meta)
            slim_checks = verify_against_torch(loaded, slim.SerializeToString(), shapes, tolerance)
            if all(c.passed for c in slim_checks) or not all(c.passed for c in checks):
                before, after = len(model.graph.node), len(slim.graph.node)
                model, checks, simplified = slim, slim_checks, True
                note = f"simplified with onnxslim: {before} -> {after} nodes, parity re-verified"
            else:
                note = "onnxslim changed the outputs beyond tolerance; kept the exported graph"
    result = ExportResult(
        path=Path(out), exporter=chosen, opset=opset, dynamic=dynamic, input_shape=tuple(shape),
        input_names=tuple(input_names), output_names=tuple(output_names), simplified=simplified,
        simplify_note=note, seconds=time.perf_counter() - started, checks=checks,
    )
    if not result.passed:
        return result  # the caller reports the mismatch; nothing is written
    if head is not None:
        say(apply_head(model, head, spec.task, spec.num_classes).note)
    with atomic_output(out, force=force) as tmp_path:
        onnx.save(model, str(tmp_path))
    return result
