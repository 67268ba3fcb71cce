"""torch -> ONNX: exporter choice, dynamic axes, metadata, checker, guarded simplification, verification.

The verified model is written atomically; a model that does not match PyTorch is not written at all.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import deploykit
from deploykit.backends.onnxruntime.runner import OnnxRuntimeRunner
from deploykit.backends.torch import TorchRunner, as_model_input, module_dtype, named_outputs
from deploykit.errors import DeployKitError, ExportError, InputError, UserCodeError, first_line, out_of_memory
from deploykit.exporters import (
    DEFAULT_OPSET,
    EXPORTERS,
    REDUCED_PRECISION,
    FlatOutputs,
    check_export_fits,
    checker_hint,
    rejects,
    run_exporter,
    takes_only_its_input,
    traced_model,
)
from deploykit.graph.heads import apply_head, check_head
from deploykit.graph.tensors import input_dependent
from deploykit.io.metadata import ModelMetadata, write_metadata
from deploykit.io.onnx_graph_checks import default_opset
from deploykit.io.output_checks import check_output_path
from deploykit.io.outputs import atomic_output, scratch_folder
from deploykit.metrics.numeric import NumericMetrics, numeric_metrics
from deploykit.types import Progress
from deploykit.zoo.sources import LoadedModel, is_user_model, model_code, user_code_name


@dataclass(frozen=True)
class Tolerance:
    """An export passes when, per output, nothing is NaN/Inf, cosine >= min_cosine, and either
    max_abs <= atol + rtol * max|ref|, or the elements beyond atol + rtol * |ref| (numpy.isclose's rule) are
    outliers: at most `max_outliers` of them (a share: 1e-4 is 26 elements of a 512x512 map) AND none off by
    more than atol + outlier_rtol * max|ref| (1% of the output's largest magnitude).

    What it tolerates: a few elements moved by a small amount, as argmax-like operators produce where two
    values of a max-pool window are equal to float rounding and ONNX Runtime and PyTorch pick different
    switches (DeconvNet's unpooling). What it does not: a local bug, such as a zeroed corner or a wrong
    border, which moves few elements but by about their own size; the count alone let that through.
    """

    atol: float = 1e-4
    rtol: float = 1e-4
    min_cosine: float = 0.99999
    max_outliers: float = 1e-4
    outlier_rtol: float = 1e-2

    @classmethod
    def for_dtype(cls, dtype: torch.dtype) -> Tolerance:
        """The tolerance for a reference model computing in `dtype`: a float16 or bfloat16 model is judged by
        its own precision (ten of its rounding steps, 2**-10 and 2**-7, of the output's largest magnitude),
        since its PyTorch outputs carry that much rounding and the float32 graph does not; float32 and float64
        ones by the default."""
        if dtype not in REDUCED_PRECISION:
            return cls()
        steps = 10 * torch.finfo(dtype).eps
        # relative to the output's largest magnitude only: an absolute allowance that size would pass a zeroed
        # corner of an output whose values are all small
        return cls(rtol=steps, min_cosine=1 - steps**2, outlier_rtol=max(cls.outlier_rtol, 2 * steps))

    def passes(self, metrics: NumericMetrics, ref_scale: float) -> bool:
        if metrics.nan or metrics.inf or not metrics.cosine >= self.min_cosine:
            return False
        if metrics.max_abs <= self.atol + self.rtol * ref_scale:
            return True
        return metrics.beyond_tol <= self.max_outliers and metrics.max_abs <= self.atol + self.outlier_rtol * ref_scale


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
    size_multiple: int = 1  # the height/width multiple the verification shapes kept (given or detected)
    head: str | None = None  # the output head appended after verification (graph/heads.py), if any
    model_dtype: str = "float32"  # the floating dtype the user's model computes in (see `exporters.traced_model`)
    as_float32: bool = False  # a float16/bfloat16/float64 model exported as its float32 copy
    trace_warnings: tuple[str, ...] = ()  # where the tracer read tensor values in the model's code (exporters)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def mismatch(self) -> str:
        """What a failed verification says, with its likely cause when the tracer warned about the model's code."""
        if not self.trace_warnings and self.opset < DEFAULT_OPSET:
            return (f"ONNX Runtime disagrees with PyTorch beyond tolerance at opset {self.opset}; try --opset "
                    f"{DEFAULT_OPSET} (older opsets compute some operators, Resize among them, unlike PyTorch) or "
                    "--no-simplify, or report the model")
        if not self.trace_warnings:
            return ("ONNX Runtime disagrees with PyTorch beyond tolerance; try --exporter dynamo or --no-simplify, "
                    f"or report the model{self._static_hint()}")
        return (f"ONNX Runtime disagrees with PyTorch beyond tolerance, likely because the trace fixed a path through "
                f"Python code that reads tensor values ({self.trace_warnings[0]}): the graph repeats what this one "
                "input did; compute it with torch operations (torch.where for a branch), or try --exporter dynamo, "
                f"which names such code{self._static_hint()}")

    def _static_hint(self) -> str:
        """Right at the export shape, wrong at the other: the number or branch the trace fixed may come from the
        input's shape (float(x.shape[2]), a mean over int(h * w)), which only a static export makes true."""
        if not self.dynamic or len(self.checks) < 2 or not self.checks[0].passed:
            return ""
        other = next(c for c in self.checks if not c.passed)
        return (f"; it agrees at the export shape {_shape_text(self.input_shape)} but not at "
                f"{_shape_text(other.input_shape)}: if the model computes a number from its input's shape "
                "(int(x.shape[2]), float(h * w)), keep it a tensor, or export with --static for that one shape")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (export --json, deploy's export.json): per check the worst max_abs and cosine over
        the outputs, and every output's metrics."""
        return {"path": str(self.path), "written": self.passed, "exporter": self.exporter, "opset": self.opset,
                "dynamic": self.dynamic, "size_multiple": self.size_multiple, "head": self.head,
                "input_shape": list(self.input_shape), "input_names": list(self.input_names),
                "output_names": list(self.output_names), "simplified": self.simplified,
                "simplify_note": self.simplify_note, "seconds": round(self.seconds, 2),
                "model_dtype": self.model_dtype, "as_float32": self.as_float32,
                "trace_warnings": list(self.trace_warnings),
                "checks": [{"input_shape": list(c.input_shape), "passed": c.passed,
                            "max_abs": max((m.max_abs for m in c.outputs.values()), default=0.0),
                            "cosine": min((m.cosine for m in c.outputs.values()), default=1.0),
                            "outputs": {k: v.to_dict() for k, v in c.outputs.items()}} for c in self.checks]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportResult:
        checks = [ShapeCheck(tuple(c["input_shape"]), {k: NumericMetrics(**v) for k, v in c.get("outputs", {}).items()},
                             bool(c["passed"])) for c in data.get("checks", [])]
        return cls(path=Path(data["path"]), exporter=str(data["exporter"]), opset=int(data["opset"]),
                   dynamic=bool(data.get("dynamic", True)), input_shape=tuple(data.get("input_shape", ())),
                   input_names=tuple(data.get("input_names", ())), output_names=tuple(data.get("output_names", ())),
                   simplified=bool(data.get("simplified", False)), simplify_note=str(data.get("simplify_note", "")),
                   seconds=float(data.get("seconds", 0.0)), checks=checks,
                   size_multiple=int(data.get("size_multiple", 1)), head=data.get("head"),
                   model_dtype=str(data.get("model_dtype", "float32")), as_float32=bool(data.get("as_float32", False)),
                   trace_warnings=tuple(data.get("trace_warnings", ())))


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _run_model(loaded: LoadedModel, x: torch.Tensor) -> object:
    """One forward pass on a copy of `x` (a forward may change its input in place); what a user's model raises is
    theirs (exit 2, their line). A size the zoo spec's rule refuses is refused before it, in the rule's words."""
    shape = tuple(x.shape)
    if len(shape) == 4:
        loaded.spec.check_size(shape[2], shape[3], loaded.options)
    try:
        with model_code(loaded.spec, f" (on input {_shape_text(shape)})"), torch.inference_mode():
            return loaded.module(as_model_input(x.clone(), loaded.module))
    except Exception as exc:  # a zoo model that cannot take this shape
        if isinstance(exc, DeployKitError) or out_of_memory(exc):  # the CLI says an allocation failed as such
            raise
        first = first_line(exc, 300)
        h, w = loaded.spec.input_size
        raise ExportError(f"{loaded.spec.name} cannot run on input {list(shape)}: {first}; give an --input-shape "
                          f"it takes, e.g. {shape[0]},{shape[1]},{h},{w} (its default size)") from exc


def _outputs(loaded: LoadedModel, shape: tuple[int, ...]) -> tuple[LoadedModel, tuple[str, ...],
                                                                     list[tuple[int, ...]]]:
    """The model to export (wrapped when it returns a dict, dataclass or nested tuple, or its forward has more
    parameters than its input), its output names and shapes. Dict keys and dataclass fields name the outputs; a
    zoo model's spec names plain ones."""
    x = torch.randn(shape)
    result = _run_model(loaded, x)
    try:
        named = named_outputs(result)
    except TypeError as exc:
        raise ExportError(f"{loaded.spec.name}: {exc}; the exported graph gives tensors only: return the tensors "
                          "alone, or wrap the model in a module whose forward does") from exc
    if is_user_model(loaded.spec):  # zoo models are deterministic (tested); only a user's model costs this pass
        _check_deterministic(loaded, x, named)
    shapes = [tuple(t.shape) for t in named.values()]
    plain = isinstance(result, torch.Tensor) or (
        isinstance(result, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in result))
    names = tuple(named)
    if plain and len(loaded.spec.output_names) == len(named):
        names = tuple(loaded.spec.output_names)
    if plain and takes_only_its_input(loaded.module):
        return loaded, names, shapes
    return replace(loaded, module=FlatOutputs(loaded.module).eval()), names, shapes


def _check_deterministic(loaded: LoadedModel, x: torch.Tensor, first: Mapping[str, torch.Tensor]) -> None:
    """Refuse a model whose forward gives different outputs on the same input (torch.rand in it, dropout with
    training=True): no export can match it, and a verification failure would blame the exporter. Judged by the
    tolerance the export is; outputs holding NaN or infinity are left to the verification's own check."""
    again = named_outputs(_run_model(loaded, x))
    tolerance = Tolerance.for_dtype(module_dtype(loaded.module))
    for name, value in first.items():
        a = value.detach().float().numpy()
        b = again[name].detach().float().numpy() if name in again else None
        if not np.isfinite(a).all() or (b is not None and a.shape == b.shape and tolerance.passes(
                numeric_metrics(a, b, atol=tolerance.atol, rtol=tolerance.rtol), float(np.abs(a).max(initial=0)))):
            continue
        differs = f"differs by up to {np.abs(a - b).max():.3g}" if b is not None and a.shape == b.shape else "changes"
        raise InputError(f"{loaded.spec.name} gives different outputs for the same input in PyTorch itself (output "
                         f"{name!r} {differs} between two runs on one random input {_shape_text(x.shape)}), so no "
                         "export can match it: its forward draws random numbers (torch.rand or randn, dropout with "
                         "training=True, added noise); make it deterministic in eval mode, e.g. "
                         "F.dropout(x, p, training=self.training)")


def _pin_output_dims(model: onnx.ModelProto, shapes: Sequence[tuple[int, ...]], dynamic: bool,
                     input_shape: Sequence[int]) -> None:
    """Exporters leave axes such as the class count symbolic; pin every axis that is not batch/height/width.
    An output whose height/width differ from the input's (SegFormer's logits at 1/4) gets its own symbols,
    not the input's "height"/"width", which would claim they are equal."""
    for value, shape in zip(model.graph.output, shapes, strict=True):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if dynamic and len(shape) == 4 and axis in (0, 2, 3):
                if axis in (2, 3) and size != input_shape[axis]:
                    dim.Clear()
                    dim.dim_param = f"{value.name}_{'height' if axis == 2 else 'width'}"
                continue
            dim.Clear()
            dim.dim_value = size


def _check_reads_input(model: onnx.ModelProto, name: str) -> None:
    """Refuse a graph whose outputs are constants: the trace saw no torch operation on the input."""
    if not any(output.name in input_dependent(model) for output in model.graph.output):
        what = "has no input" if not model.graph.input else "computes no output from its input"
        raise ExportError(
            f"the exported graph of {name} {what}: the tracer saw no torch operation on the input, so it kept "
            "only constants (a forward that computes in NumPy or Python numbers, e.g. x.numpy(), x.tolist() or "
            "x.item(), or that ignores its input); compute the outputs from the input with torch operations"
        )


def _check(model: onnx.ModelProto, traced: torch.nn.Module) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        reason = first_line(exc)
        raise ExportError(f"exported model fails the ONNX checker: {reason}{checker_hint(traced, reason)}") from exc


def verification_shapes(shape: tuple[int, ...], dynamic: bool, multiple: int) -> list[tuple[int, ...]]:
    """The export shape, and for dynamic models a second one that differs in batch, height and width by
    multiples of `multiple` (at least 8 and 16 pixels), so a model needing sizes divisible by it gets them."""
    if not dynamic:
        return [shape, shape]
    step = multiple * -(-8 // multiple)
    n, c, h, w = shape
    return [shape, (n + 1, c, h + step, w + 2 * step)]


def _size_checked_shapes(loaded: LoadedModel, shape: tuple[int, ...], dynamic: bool, given: int | None,
                         say: Progress) -> tuple[list[tuple[int, ...]], int]:
    """Verification shapes the model accepts, and the size multiple they keep.

    The second shape changes height and width by multiples of the model's size multiple (the zoo's, or
    --size-multiple). A model without one that rejects it (segmentation_models_pytorch's DeepLabV3Plus raises
    for sizes not divisible by 16) is retried once with multiples of 32, the common encoder stride, when the
    export shape allows; otherwise the message names --size-multiple and --static.
    """
    multiple = given or loaded.spec.size_multiple
    shapes = verification_shapes(shape, dynamic, multiple)
    _check_second_shape(loaded, shapes[1], given)
    # Zoo models declare their multiple (and are tested); only a user's model costs this extra forward pass.
    if not dynamic or not is_user_model(loaded.spec) or (error := rejects(loaded, shapes[1])) is None:
        return shapes, multiple
    rejected = UserCodeError.from_exception(f"{loaded.spec.name} on {_shape_text(shapes[1])}", error)
    if not given and multiple < 32 and shape[2] % 32 == 0 and shape[3] % 32 == 0:
        retry = verification_shapes(shape, dynamic, 32)
        say(f"the model rejects input {_shape_text(shapes[1])} ({rejected}); retrying with a height and width "
            f"that are multiples of 32: {_shape_text(retry[1])} (--size-multiple N chooses the multiple)")
        if rejects(loaded, retry[1]) is None:
            return retry, 32
    raise ExportError(f"{rejected}. The export shape worked: if the model needs sizes divisible by N, pass "
                      "--size-multiple N (with an --input-shape divisible by N) to verify on such sizes, or "
                      "--static to export the one shape")


def _check_second_shape(loaded: LoadedModel, second: tuple[int, ...], given: int | None) -> None:
    """A --size-multiple that makes the second verification shape one the zoo model's rule refuses (4 for
    U-Net, whose sides step by 16) is the option's fault: say so, not the shape the user never gave."""
    if given is None or len(second) != 4:
        return
    try:
        loaded.spec.check_size(second[2], second[3], loaded.options)
    except InputError as exc:
        raise InputError(f"--size-multiple {given} makes the second verification shape {_shape_text(second)}, which "
                         f"{loaded.spec.name} cannot take ({exc}); drop --size-multiple to keep the zoo's "
                         f"{loaded.spec.size_multiple}") from exc


def _check_multiple(shape: tuple[int, ...], given: int | None) -> None:
    if given is not None and given < 1:
        raise InputError(f"--size-multiple must be a positive integer, got {given}")
    if given and (shape[2] % given or shape[3] % given):
        raise InputError(f"--input-shape {_shape_text(shape)} has a height or width that is not a multiple of "
                         f"--size-multiple {given}; use e.g. {_shape_text(_round_up(shape, given))}")


def _round_up(shape: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    n, c, h, w = shape
    return (n, c, -(-h // multiple) * multiple, -(-w // multiple) * multiple)


_BAKED_SHAPE_HINT = ("the trace fixed a size the model computes from its input (a Python int from x.shape); "
                     "export with --static, or --size-multiple N if the model needs sizes divisible by N, or "
                     "try --exporter dynamo")


def _ort_infer(runner: OnnxRuntimeRunner, feed: dict[str, np.ndarray], shape: Sequence[int]) -> dict[str, np.ndarray]:
    try:
        return runner.infer(feed)
    except Exception as exc:  # onnxruntime raises its own Fail/RuntimeException types
        text = " ".join(str(exc).split())
        node = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
        reason = re.split(r"was false\. |Status Message: ", text)[-1][:200]
        where = f"{node[1]} node {node[2]}: " if node else ""
        raise ExportError(f"the exported graph fails in ONNX Runtime on input {_shape_text(shape)} "
                          f"({where}{reason}): {_BAKED_SHAPE_HINT}") from exc


def _check_output_shapes(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], shape: Sequence[int]) -> None:
    for name, ref in expected.items():
        if got[name].shape != ref.shape:
            raise ExportError(f"on input {_shape_text(shape)} the exported graph's {name} is "
                              f"{_shape_text(got[name].shape)} where PyTorch's is {_shape_text(ref.shape)}: "
                              f"{_BAKED_SHAPE_HINT}")


# Each input PyTorch ran on, with its outputs: an equal input (with the same output names) is not run again
TorchOutputs = list[tuple[np.ndarray, dict[str, np.ndarray]]]


def verify_against_torch(loaded: LoadedModel, onnx_bytes: bytes, shapes: Sequence[tuple[int, ...]],
                         tolerance: Tolerance, seed: int = 0, torch_outputs: TorchOutputs | None = None
                         ) -> list[ShapeCheck]:
    """Run PyTorch and ONNX Runtime on the same random inputs of each shape and compare every output.
    `torch_outputs`: PyTorch's outputs kept from earlier calls, reused for an equal input and filled with new
    ones, so the exported and the simplified graph are checked against one PyTorch run."""
    rng = np.random.default_rng(seed)
    checks = []
    kept: TorchOutputs = [] if torch_outputs is None else torch_outputs
    ort_runner = OnnxRuntimeRunner(onnx_bytes)
    with ort_runner:
        input_spec = ort_runner.input_specs()[0]
        input_name, channels = input_spec.name, input_spec.shape[1] if len(input_spec.shape) == 4 else None
        output_names = [s.name for s in ort_runner.output_specs()]
        with TorchRunner(loaded.module, input_names=(input_name,), output_names=output_names,
                         user_code=user_code_name(loaded.spec),
                         channels=channels if isinstance(channels, int) else None) as torch_runner:
            for shape in shapes:
                x = rng.standard_normal(shape).astype(np.float32)
                feed = {input_name: x}
                expected = next((outputs for seen, outputs in kept if seen.shape == x.shape
                                 and np.array_equal(seen, x) and set(outputs) == set(output_names)), None)
                if expected is None:
                    expected = torch_runner.infer(feed)
                    _check_finite(loaded, expected, shape)
                    kept.append((x, expected))
                got = _ort_infer(ort_runner, feed, shape)
                _check_output_shapes(expected, got, shape)
                metrics = {name: numeric_metrics(expected[name], got[name], atol=tolerance.atol, rtol=tolerance.rtol)
                           for name in output_names}
                passed = all(tolerance.passes(metrics[n], float(np.abs(expected[n]).max())) for n in output_names)
                checks.append(ShapeCheck(tuple(shape), metrics, passed))
    return checks


def _check_finite(loaded: LoadedModel, outputs: Mapping[str, np.ndarray], shape: Sequence[int]) -> None:
    """A model whose PyTorch output holds NaN or infinity gives nothing to verify the export against: bad input
    (the model or its weights), said as such, not reported as ONNX Runtime disagreeing."""
    for name, value in outputs.items():
        bad = ~np.isfinite(value)
        if bad.any():
            what = "NaN" if np.isnan(value).any() else "infinite values"
            raise InputError(f"{loaded.spec.name} gives {what} in PyTorch itself ({bad.mean():.0%} of output {name!r} "
                             f"on a random normal input {'x'.join(map(str, shape))}), so there is nothing to verify "
                             "the export against; check the model and its weights")


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


def _check_opset_written(model: onnx.ModelProto, exporter: str, opset: int) -> None:
    """Refuse a graph of another opset than the one asked for: torch's dynamo exporter writes opset 18 or newer
    and converts down after, keeping 18 (with a warning, silenced here) when the conversion fails."""
    written = default_opset(model)
    if written == opset:
        return
    why = ("; it writes opset 18 and newer, and could not convert this model down"
           if exporter == "dynamo" and opset < 18 else "")
    other = " or --exporter torchscript, which writes opsets below 18" if why else ""
    raise ExportError(f"the {exporter} exporter wrote opset {written}, not the {opset} asked for{why}; use "
                      f"--opset {written}{other}")


def onnx_from_torch(
    loaded: LoadedModel,
    out: str | os.PathLike[str],
    *,
    input_shape: tuple[int, int, int, int] | None = None,
    dynamic: bool = True,
    opset: int | None = None,
    exporter: str | None = None,
    simplify: bool = True,
    tolerance: Tolerance | None = None,
    force: bool = False,
    progress: Progress | None = None,
    size_multiple: int | None = None,
    head: str | None = None,
) -> ExportResult:
    """Export, check, simplify where parity holds, verify against PyTorch on two shapes, write atomically.

    Defaults: opset DEFAULT_OPSET, the model's own exporter (ModelSpec.exporter), dynamic batch/H/W.
    size_multiple: height and width of the verification shapes stay multiples of it (default: the zoo's
    value; for a user model, detected when it rejects the second shape, see `_size_checked_shapes`).
    `head` (graph/heads.py) is appended after verification, which compares the network's own outputs.
    """
    say = progress or (lambda _msg: None)
    opset = DEFAULT_OPSET if opset is None else opset
    check_output_path(out, force=force)
    spec = loaded.spec
    shape = input_shape or (1, 3, *spec.input_size)
    if not 7 <= opset <= 24:
        raise ExportError(f"opset {opset} is outside 7-24; use {DEFAULT_OPSET} (TensorRT 10 parses 9-24)")
    chosen = exporter or spec.exporter
    if chosen not in EXPORTERS:
        raise ExportError(f"unknown exporter {chosen!r}; choose one of {', '.join(EXPORTERS)}")
    _check_multiple(tuple(shape), size_multiple)
    if head is not None:
        check_head(head, spec.task)
    if loaded.was_training:
        say(f"{spec.name} was in training mode: exported and verified in eval mode, as it is deployed "
            f"({', '.join(loaded.was_training)} use their running statistics or are off; call model.eval() in the "
            "factory to say so)")
    check_export_fits(loaded, verification_shapes(tuple(shape), dynamic, size_multiple or spec.size_multiple),
                      f"exporting {spec.name} at {_shape_text(shape)} (and verifying it)",
                      "give a smaller --input-shape (a dynamic export runs at larger sizes too), or free memory")
    sample = torch.randn(shape)
    input_names = spec.input_names
    loaded, output_names, output_shapes = _outputs(loaded, tuple(shape))
    if head is not None:
        check_head(head, spec.task, output_shapes[0] if output_shapes else None)
    shapes, multiple = _size_checked_shapes(loaded, tuple(shape), dynamic, size_multiple, say)
    traced, widened = traced_model(loaded, tuple(shape), say)
    model_dtype = module_dtype(loaded.module)
    tolerance = tolerance or Tolerance.for_dtype(model_dtype)
    started = time.perf_counter()
    with scratch_folder("deploykit-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        say(f"exporting {spec.name} with the {chosen} exporter (opset {opset}, "
            f"{'dynamic batch/height/width' if dynamic else 'static shape'})")
        kwargs = dict(opset=opset, input_names=input_names, output_names=output_names, dynamic=dynamic)
        trace_warnings = run_exporter(chosen, traced, sample, raw, **kwargs)
        exported = onnx.load(str(raw))
        _check_opset_written(exported, chosen, opset)
        _pin_output_dims(exported, output_shapes, dynamic, shape)
        model = _check(exported, traced.module)
        _check_reads_input(model, spec.name)
    meta = _metadata(loaded, shape, chosen, input_names, output_names)
    write_metadata(model, meta)
    say(f"verifying against PyTorch on shapes {', '.join('x'.join(map(str, s)) for s in shapes)}")
    torch_outputs: TorchOutputs = []
    checks = verify_against_torch(loaded, model.SerializeToString(), shapes, tolerance, torch_outputs=torch_outputs)
    simplified, note = False, "simplification off"
    if simplify:
        slim = _simplify(model)
        if slim is None:
            note = "onnxslim not installed or failed; kept the exported graph"
        else:
            write_metadata(slim, meta)
            slim_checks = verify_against_torch(loaded, slim.SerializeToString(), shapes, tolerance,
                                               torch_outputs=torch_outputs)
            if all(c.passed for c in slim_checks) or not all(c.passed for c in checks):
                before, after = len(model.graph.node), len(slim.graph.node)
                model, checks, simplified = slim, slim_checks, True
                note = f"simplified with onnxslim: {before} -> {after} nodes, parity re-verified"
            else:
                note = "onnxslim changed the outputs beyond tolerance; kept the exported graph"
    result = ExportResult(
        path=Path(out), exporter=chosen, opset=opset, dynamic=dynamic, input_shape=tuple(shape),
        input_names=tuple(input_names), output_names=tuple(output_names), simplified=simplified,
        simplify_note=note, seconds=time.perf_counter() - started, checks=checks, size_multiple=multiple,
        head=head, model_dtype=str(model_dtype).removeprefix("torch."), as_float32=widened,
        trace_warnings=tuple(trace_warnings),
    )
    if not result.passed:
        return result  # the caller reports the mismatch; nothing is written
    if head is not None:
        say(apply_head(model, head, spec.task, spec.num_classes).note)
    with atomic_output(out, force=force, needs=model.ByteSize()) as tmp_path:
        onnx.save(model, str(tmp_path))
    return result
