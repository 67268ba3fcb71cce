"""The exported ONNX graph after tracing: its output dimensions pinned, the checks it must pass (ONNX checker,
opset written, reads its input), its metadata, and the guarded simplification."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import onnx
import torch

import deploykit
from deploykit.errors import ExportError, first_line
from deploykit.exporters import checker_hint
from deploykit.graph.tensors import input_dependent
from deploykit.io.metadata import ModelMetadata
from deploykit.io.onnx_graph_checks import default_opset
from deploykit.zoo.sources import LoadedModel


def pin_output_dims(model: onnx.ModelProto, shapes: Sequence[tuple[int, ...]], dynamic: bool,
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


def check_reads_input(model: onnx.ModelProto, name: str) -> None:
    """Refuse a graph whose outputs are constants: the trace saw no torch operation on the input."""
    if not any(output.name in input_dependent(model) for output in model.graph.output):
        what = "has no input" if not model.graph.input else "computes no output from its input"
        raise ExportError(
            f"the exported graph of {name} {what}: the tracer saw no torch operation on the input, so it kept "
            "only constants (a forward that computes in NumPy or Python numbers, e.g. x.numpy(), x.tolist() or "
            "x.item(), or that ignores its input); compute the outputs from the input with torch operations"
        )


def check_graph(model: onnx.ModelProto, traced: torch.nn.Module) -> onnx.ModelProto:
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        reason = first_line(exc)
        raise ExportError(f"exported model fails the ONNX checker: {reason}{checker_hint(traced, reason)}") from exc


def simplify_graph(model: onnx.ModelProto) -> onnx.ModelProto | None:
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


def export_metadata(loaded: LoadedModel, shape: tuple[int, ...], exporter: str, inputs: Sequence[str],
                    outputs: Sequence[str]) -> ModelMetadata:
    spec = loaded.spec
    return ModelMetadata(
        model=spec.name, task=spec.task, num_classes=spec.num_classes, preprocessing=spec.preprocessing,
        input_size=(shape[2], shape[3]), input_names=tuple(inputs), output_names=tuple(outputs),
        options=loaded.options, exporter=exporter, weights=loaded.weights,
        versions={"deploykit": deploykit.__version__, "torch": torch.__version__, "onnx": onnx.__version__},
    )


def check_opset_written(model: onnx.ModelProto, exporter: str, opset: int) -> None:
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
