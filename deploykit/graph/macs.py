"""Multiply-adds of an ONNX graph at a given input shape, counted the way deploykit.zoo.flops counts a module.

Counted: Conv (and ORT's FusedConv, ConvInteger, QLinearConv), ConvTranspose, Gemm, MatMul (and FusedGemm,
FusedMatMul, MatMulInteger, QLinearMatMul), one multiply-accumulate per weight use:
- Conv: |Y| * |W| / M            (output elements x input channels per group x kernel positions)
- ConvTranspose: |X| * |W| / C   (input elements x output channels per group x kernel positions)
- Gemm / MatMul: |Y| * K
Shapes come from ONNX shape inference with data propagation at the benchmarked input shape; tensors it
cannot resolve (shapes computed at run time) are measured by one ONNX Runtime run that exposes them.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, shape_inference

from deploykit.evaluate import session_from_onnx

# op_type -> (kind, index of the weight/B input)
MAC_OPS: dict[str, tuple[str, int]] = {
    "Conv": ("conv", 1), "FusedConv": ("conv", 1), "ConvInteger": ("conv", 1), "QLinearConv": ("conv", 3),
    "ConvTranspose": ("convtranspose", 1),
    "Gemm": ("gemm", 1), "FusedGemm": ("gemm", 1),
    "MatMul": ("matmul", 1), "FusedMatMul": ("matmul", 1), "MatMulInteger": ("matmul", 1),
    "QLinearMatMul": ("matmul", 3),
}


@dataclass(frozen=True)
class GraphMacs:
    madds: int
    by_op: dict[str, int]
    input_shapes: dict[str, tuple[int, ...]]
    unresolved: list[str] = field(default_factory=list)  # nodes whose shapes stayed unknown (not counted)
    by_node: dict[str, int] = field(default_factory=dict)  # node name (else its first output) -> multiply-adds

    @property
    def gflops(self) -> float:
        return 2 * self.madds / 1e9


Shapes = dict[str, tuple[int, ...]]
InputShapes = Mapping[str, Sequence[int]] | Sequence[int]  # name -> shape, or one shape for a one-input model


def _dims(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
    return None if any(d < 0 for d in dims) else tuple(dims)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs (older exporters list initializers among the inputs too)."""
    initializers = {init.name for init in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def _fix_inputs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> None:
    for value in graph_inputs(model):
        if value.name not in input_shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        wanted = list(input_shapes[value.name])
        if len(dims) != len(wanted):
            raise ValueError(f"input {value.name} has rank {len(dims)}; shape {wanted} given")
        for dim, size in zip(dims, wanted, strict=True):
            dim.Clear()
            dim.dim_value = int(size)


def _known_shapes(model: onnx.ModelProto) -> Shapes:
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference gives up on some custom-domain graphs; fall back to the declared shapes
        inferred = model
    shapes: Shapes = {init.name: tuple(init.dims) for init in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = _dims(value)
        if dims is not None:
            shapes[value.name] = dims
    for node in inferred.graph.node:  # Constant nodes carry their shape in the attribute
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)
    return shapes


def _needed(node: onnx.NodeProto) -> list[str]:
    kind, w = MAC_OPS[node.op_type]
    if kind == "conv":
        return [node.output[0], node.input[w]]
    if kind == "convtranspose":
        return [node.input[0], node.input[w]]
    return [node.input[0], node.output[0]]


def _node_macs(node: onnx.NodeProto, shapes: Shapes) -> int:
    kind, w = MAC_OPS[node.op_type]
    if kind == "conv":
        weight = shapes[node.input[w]]
        return math.prod(shapes[node.output[0]]) * math.prod(weight[1:])
    if kind == "convtranspose":
        weight = shapes[node.input[w]]
        return math.prod(shapes[node.input[0]]) * math.prod(weight[1:])
    a, y = shapes[node.input[0]], shapes[node.output[0]]
    if kind == "gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        k = a[0] if trans_a else a[1]
    else:
        k = a[-1]
    return math.prod(y) * k


def _measure_shapes(model: onnx.ModelProto, names: Sequence[str], input_shapes: Mapping[str, Sequence[int]],
                    types: Mapping[str, int]) -> Shapes:
    """Run the model once in ONNX Runtime with `names` exposed as outputs, and read their shapes."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT),
                                                                    None))
    session = session_from_onnx(probe.SerializeToString(), optimization="disable")  # keep every tensor by name
    feed = {}
    for value in session.get_inputs():
        dtype = onnx.helper.tensor_dtype_to_np_dtype(
            next(v.type.tensor_type.elem_type for v in graph_inputs(model) if v.name == value.name))
        feed[value.name] = np.zeros(tuple(input_shapes[value.name]), dtype=dtype)
    outputs = session.run(list(names), feed)
    return {name: tuple(np.shape(out)) for name, out in zip(names, outputs, strict=True)}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.value_info,
                                                             *model.graph.output]}
    types.update({init.name: init.data_type for init in model.graph.initializer})
    return types


def _at_shapes(model: onnx.ModelProto | str | os.PathLike[str],
               input_shapes: InputShapes) -> tuple[onnx.ModelProto, Shapes]:
    """A copy of the model with its inputs fixed at `input_shapes` (name -> shape, or one shape for a one-input
    model), and the input shapes by name."""
    proto = onnx.load(os.fspath(model), load_external_data=False) if not isinstance(model, onnx.ModelProto) \
        else model
    inputs = graph_inputs(proto)
    if not isinstance(input_shapes, Mapping):
        if len(inputs) != 1:
            raise ValueError(f"the model has {len(inputs)} inputs; give a shape per input name")
        input_shapes = {inputs[0].name: tuple(input_shapes)}
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    _fix_inputs(work, input_shapes)
    return work, {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}


def activation_bytes(model: onnx.ModelProto | str | os.PathLike[str], input_shapes: InputShapes) -> int:
    """Bytes of the tensors alive at once, at their largest, when the nodes run in graph order at `input_shapes`
    and each tensor is freed after its last reader (the inputs and outputs are held throughout; the weights and
    tensors whose shapes inference cannot tell are not counted). What a runtime's memory planner needs at least,
    give or take an in-place op; its own scratch buffers come on top."""
    work, _ = _at_shapes(model, input_shapes)
    shapes, types = _known_shapes(work), _elem_types(work)

    def size(name: str) -> int:
        if name not in shapes or not name:
            return 0
        elem = types.get(name, onnx.TensorProto.FLOAT)
        return math.prod(shapes[name]) * np.dtype(helper.tensor_dtype_to_np_dtype(elem)).itemsize

    held = {v.name for v in [*graph_inputs(work), *work.graph.output]}
    weights = {init.name for init in work.graph.initializer}
    last_read = {name: index for index, node in enumerate(work.graph.node) for name in node.input}
    live = peak = sum(size(v.name) for v in graph_inputs(work))
    for index, node in enumerate(work.graph.node):
        live += sum(size(name) for name in node.output)
        peak = max(peak, live)
        live -= sum(size(name) for name in set(node.input)
                    if last_read.get(name) == index and name not in held and name not in weights)
    return peak


def output_values(model: onnx.ModelProto | str | os.PathLike[str], input_shapes: InputShapes) -> int:
    """How many values the graph's outputs hold at `input_shapes` (outputs whose shapes inference cannot tell
    are not counted)."""
    work, _ = _at_shapes(model, input_shapes)
    shapes = _known_shapes(work)
    return sum(math.prod(shapes[v.name]) for v in work.graph.output if v.name in shapes)


ARENA_GROWTH = 2  # ONNX Runtime's arena grows in chunks that double: up to twice the tensors' bytes reserved


def arena_bytes(model: onnx.ModelProto | str | os.PathLike[str], input_shapes: InputShapes) -> int:
    """The memory an ONNX Runtime session may hold after one run at `input_shapes`: `activation_bytes` as its
    arena reserves them."""
    return ARENA_GROWTH * activation_bytes(model, input_shapes)


def count_onnx_macs(model: onnx.ModelProto | str | os.PathLike[str], input_shapes: InputShapes) -> GraphMacs:
    """Multiply-adds of one run at `input_shapes` (name -> shape, or one shape for a one-input model)."""
    work, input_shapes = _at_shapes(model, input_shapes)
    shapes = _known_shapes(work)
    counted = [n for n in work.graph.node if n.op_type in MAC_OPS]
    missing = sorted({t for n in counted for t in _needed(n) if t not in shapes})
    if missing:
        # What stays unknown after this is reported as unresolved below.
        with contextlib.suppress(Exception):
            shapes.update(_measure_shapes(work, missing, input_shapes, _elem_types(work)))
    by_op: dict[str, int] = {}
    by_node: dict[str, int] = {}
    unresolved: list[str] = []
    for node in counted:
        if any(t not in shapes for t in _needed(node)):
            unresolved.append(node.name or node.output[0])
            continue
        by_node[node.name or node.output[0]] = madds = _node_macs(node, shapes)
        by_op[node.op_type] = by_op.get(node.op_type, 0) + madds
    return GraphMacs(madds=sum(by_op.values()), by_op=by_op,
                     input_shapes=dict(input_shapes),
                     unresolved=unresolved, by_node=by_node)
