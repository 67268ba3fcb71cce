"""Output heads appended to an exported graph (`deploykit export --head`), so the engine returns what the
application uses instead of what the network computes.

- "argmax" (segmentation): ArgMax over the class axis of output 0, cast to uint8 when there are at most 256
  classes (int32 otherwise): the engine returns an N,H,W class map. For VOC's 21 classes that is 21x fewer
  output values and 84x fewer bytes than float32 logits, and no host-side argmax. TensorRT users report
  host-side ArgMax/TopK and large device-to-host copies as pain points (onnx/onnx-tensorrt#671, #792,
  NVIDIA/TensorRT#4403, #1940); TensorRT parses ONNX ArgMax as a TopK layer (k=1) whose indices are integers
  (onnx-tensorrt argMinMaxHelper casts them to INT64), and converts to UINT8 only from FLOAT or HALF
  (NVIDIA/TensorRT include/NvInferRuntimeBase.h, DataType::kUINT8: "kUINT8 conversions are only supported for
  {kFLOAT, kHALF}"). So the uint8 map is ArgMax -> Cast(float) -> Cast(uint8), which every backend runs and
  which is exact: class indices below 256 are whole numbers float32 holds exactly.
  ONNX ArgMax keeps the first index of tied maxima (select_last_index=0), as numpy.argmax does, so parity
  against a host-side argmax is exact for equal logits.
- "normalize" (saliency): the per-image min-max normalisation to [0, 1] that MSI-Net's reference code applies
  to its output (deploykit/zoo/msinet.py), appended when the graph does not end with it already.

The head's name is recorded in the model's metadata_props under HEAD_KEY, so parity and bench know the output
is a class map without guessing from dtypes alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.errors import ExportError
from deploykit.io.onnx_graph_checks import default_opset

HEAD_KEY = "deploykit.head"
EPS = 1e-8  # as MSI-Net's forward


@dataclass(frozen=True)
class HeadResult:
    model: onnx.ModelProto
    head: str
    note: str


def _output(model: onnx.ModelProto) -> tuple[onnx.ValueInfoProto, list[int | str]]:
    if not model.graph.output:
        raise ExportError("the model has no output to put a head on")
    value = model.graph.output[0]
    dims: list[int | str] = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return value, dims


def _rename_output(model: onnx.ModelProto, suffix: str) -> tuple[str, str]:
    """Output 0 keeps its name for the head's result; the network's own tensor gets `name + suffix`."""
    name = model.graph.output[0].name
    inner = f"{name}{suffix}"
    for node in model.graph.node:
        node.output[:] = [inner if o == name else o for o in node.output]
        node.input[:] = [inner if i == name else i for i in node.input]
    return name, inner


def _inferred_classes(model: onnx.ModelProto) -> int | None:
    """The class axis of output 0 by ONNX shape inference (exporters often leave it unnamed and unknown)."""
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    probe.graph.output[0].type.tensor_type.ClearField("shape")  # inference keeps declared dims: let it fill them
    try:
        inferred = onnx.shape_inference.infer_shapes(probe)
    except Exception:  # a model shape inference cannot follow: fall back to the metadata
        return None
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    return dims[1].dim_value or None if len(dims) == 4 and dims[1].HasField("dim_value") else None


def argmax_head(model: onnx.ModelProto, num_classes: int | None) -> HeadResult:
    value, dims = _output(model)
    if len(dims) != 4:
        raise ExportError(f"--head argmax needs an N,C,H,W segmentation output; {value.name} has {len(dims)} dims")
    classes = dims[1] if isinstance(dims[1], int) and dims[1] > 0 else _inferred_classes(model) or num_classes
    if classes is None:
        raise ExportError("--head argmax: the class axis of the output is dynamic and the model has no "
                          "num_classes in its metadata")
    if classes < 2:
        raise ExportError("--head argmax needs at least two classes; a binary output is a threshold, not an argmax")
    out_type = TensorProto.UINT8 if classes <= 256 else TensorProto.INT32
    name, inner = _rename_output(model, "_logits")
    model.graph.node.append(
        helper.make_node("ArgMax", [inner], [f"{name}_argmax"], name="head_argmax", axis=1, keepdims=0))
    indices = f"{name}_argmax"
    if out_type == TensorProto.UINT8:  # TensorRT casts to UINT8 from FLOAT/HALF only (module docstring)
        model.graph.node.append(helper.make_node("Cast", [indices], [f"{name}_argmax_float"], name="head_to_float",
                                                 to=TensorProto.FLOAT))
        indices = f"{name}_argmax_float"
    model.graph.node.append(helper.make_node("Cast", [indices], [name], name="head_cast", to=out_type))
    del model.graph.output[0]
    model.graph.output.insert(0, helper.make_tensor_value_info(name, out_type, [dims[0], dims[2], dims[3]]))
    kind = "uint8" if out_type == TensorProto.UINT8 else "int32"
    return HeadResult(model, "argmax", f"ArgMax over {classes} classes appended: {name} is an N,H,W {kind} "
                                       f"class map ({classes * 4 // np.dtype(kind).itemsize}x fewer output bytes)")


def _ends_normalised(model: onnx.ModelProto) -> bool:
    """Whether output 0 is already (x - min) / (eps + max) as MSI-Net's forward computes it."""
    producers = {o: n for n in model.graph.node for o in n.output}
    last = producers.get(model.graph.output[0].name)
    if last is None or last.op_type != "Div":
        return False
    numerator = producers.get(last.input[0])
    return numerator is not None and numerator.op_type == "Sub" and any(
        (producers.get(i) is not None and producers[i].op_type == "ReduceMin") for i in numerator.input)


def normalize_head(model: onnx.ModelProto, num_classes: int | None) -> HeadResult:
    value, dims = _output(model)
    if _ends_normalised(model):
        return HeadResult(model, "normalize", f"{value.name} is already min-max normalised per image: no head added")
    opset = default_opset(model) or 0
    axes = list(range(1, len(dims)))
    name, inner = _rename_output(model, "_raw")
    eps = numpy_helper.from_array(np.array(EPS, np.float32), f"{name}_eps")
    model.graph.initializer.append(eps)
    if opset >= 18:  # axes became an input of the Reduce ops in opset 18
        model.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), f"{name}_axes"))
        reduce_args: dict[str, Any] = {}
        reduce_inputs = [f"{name}_axes"]
    else:
        reduce_args, reduce_inputs = {"axes": axes}, []
    model.graph.node.extend([
        helper.make_node("ReduceMin", [inner, *reduce_inputs], [f"{name}_min"], name="head_min", keepdims=1,
                         **reduce_args),
        helper.make_node("Sub", [inner, f"{name}_min"], [f"{name}_shifted"], name="head_shift"),
        helper.make_node("ReduceMax", [f"{name}_shifted", *reduce_inputs], [f"{name}_max"], name="head_max",
                         keepdims=1, **reduce_args),
        helper.make_node("Add", [f"{name}_max", f"{name}_eps"], [f"{name}_scale"], name="head_scale"),
        helper.make_node("Div", [f"{name}_shifted", f"{name}_scale"], [name], name="head_normalize"),
    ])
    return HeadResult(model, "normalize", f"per-image min-max normalisation appended to {name}")


# head -> (task it needs, function)
HEADS: dict[str, tuple[str, Callable[[onnx.ModelProto, int | None], HeadResult]]] = {
    "argmax": ("segmentation", argmax_head),
    "normalize": ("saliency", normalize_head),
}


def check_head(head: str, task: str | None, first_output: tuple[int, ...] | None = None) -> None:
    """ExportError when `head` cannot apply to a `task` model whose output 0 has shape `first_output`: checked
    before the export's long work, from the model's task and one forward's output shape."""
    if head not in HEADS:
        raise ExportError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    needs = HEADS[head][0]
    if task is not None and task != needs:
        raise ExportError(f"--head {head} is for {needs} models; this one is a {task} model")
    if head == "argmax" and first_output is not None and len(first_output) != 4:
        raise ExportError(f"--head argmax needs an N,C,H,W segmentation output; the model's first output has shape "
                          f"{list(first_output)}")


def apply_head(model: onnx.ModelProto, head: str, task: str | None, num_classes: int | None) -> HeadResult:
    """Append `head` to output 0 of `model` (in place) and record it in the metadata; see the module docstring."""
    check_head(head, task)
    result = HEADS[head][1](model, num_classes)
    props = {p.key: p.value for p in model.metadata_props}
    props[HEAD_KEY] = head
    del model.metadata_props[:]
    model.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in props.items())
    onnx.checker.check_model(model)
    return result


def head_of(model: onnx.ModelProto) -> str | None:
    """The head recorded by apply_head, if any."""
    return next((p.value for p in model.metadata_props if p.key == HEAD_KEY), None)
