"""Graph bookkeeping shared by the precision passes: tensor types, producers and consumers, node matching.

Only the main graph is indexed; nodes with subgraphs (If, Loop, Scan) are opaque to the index, and every outer
tensor a subgraph reads is reported by `subgraph_reads` so passes can leave it in its original type. Names made
by a pass are unique across every scope (`all_names`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, numpy_helper

from deploykit.errors import ConfigConflict
from deploykit.io.onnx_graph_checks import outer_reads

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
# Pseudo op types a user may name in --keep-fp32 / --keep-float besides real ONNX op types.
PSEUDO_OPS = {"DepthwiseConv": "Conv whose group equals its input channels (groups > 1)"}


@dataclass(frozen=True)
class GraphIndex:
    """Who produces and who consumes each tensor, and each tensor's element type where known."""

    producer: dict[str, onnx.NodeProto]
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
    types: dict[str, int]  # tensor name -> TensorProto element type
    initializers: dict[str, onnx.TensorProto]
    ranks: dict[str, int] = field(default_factory=dict)  # tensor name -> rank, where known
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # tensor name -> dims (-1: not fixed), where known

    def is_float(self, name: str) -> bool:
        return self.types.get(name) in FLOAT_TYPES


def ensure_node_names(graph: onnx.GraphProto) -> None:
    """Give every unnamed node a unique name (op type + index) so nodes can be named in reports and options."""
    taken = {node.name for node in graph.node if node.name}
    for index, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _constant_type(node: onnx.NodeProto) -> int | None:
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return int(attr.t.data_type)
        if attr.name in ("value_float", "value_floats"):
            return TensorProto.FLOAT
        if attr.name in ("value_int", "value_ints"):
            return TensorProto.INT64
    return None


def index_graph(model: onnx.ModelProto, *, infer_types: bool = True) -> GraphIndex:
    """Index `model`'s main graph; element types come from ONNX shape inference (non-strict), or only from
    declarations, initializers and constants when `infer_types` is False (cheaper)."""
    inferred = model
    if infer_types:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
        except Exception:  # inference is only an aid here: fall back to the declared types
            inferred = model
    graph = inferred.graph
    types: dict[str, int] = {}
    ranks: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
            if value.type.tensor_type.HasField("shape"):
                dims = value.type.tensor_type.shape.dim
                ranks[value.name] = len(dims)
                shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    initializers = {init.name: init for init in model.graph.initializer}
    for name, init in initializers.items():
        types[name] = init.data_type
        ranks[name] = len(init.dims)
        shapes[name] = tuple(init.dims)
    producer: dict[str, onnx.NodeProto] = {}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            constant = _constant_type(node)
            if constant is not None:
                types[node.output[0]] = constant
        for name in node.output:
            if name:
                producer[name] = node
        for position, name in enumerate(node.input):
            if name:
                consumers[name].append((node, position))
    return GraphIndex(producer=producer, consumers=dict(consumers), types=types, initializers=initializers,
                      ranks=ranks, shapes=shapes)


def subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Outer-scope tensor names read inside the subgraphs of `graph`'s nodes (recursively)."""
    return {name for node in graph.node for name in outer_reads(node)}


def is_depthwise(node: onnx.NodeProto, index: GraphIndex) -> bool:
    if node.op_type != "Conv":
        return False
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    weight = index.initializers.get(node.input[1]) if len(node.input) > 1 else None
    return group > 1 and weight is not None and int(weight.dims[1]) == 1


def match_nodes(graph: onnx.GraphProto, patterns: Iterable[str], index: GraphIndex, *, option: str) -> set[str]:
    """Names of the nodes whose name or op type (or pseudo op type) equals one of `patterns`.

    A pattern that matches nothing is a typo or a stale name: fail loudly rather than silently keep nothing. One
    that matches only nodes inside subgraphs is no typo (the FP16 pass applies the patterns inside them).
    """
    chosen: set[str] = set()
    inner = inner_nodes(graph)
    for pattern in patterns:
        hits = {
            node.name for node in graph.node
            if pattern in (node.name, node.op_type) or (pattern == "DepthwiseConv" and is_depthwise(node, index))
        }
        if not hits and not any(pattern in (node.name, node.op_type) for node in inner):
            ops = sorted({node.op_type for node in (*graph.node, *inner)})
            raise ConfigConflict(
                f"{option} {pattern!r} matches no node name or op type in the model; op types present: "
                f"{', '.join(ops)} (or {', '.join(PSEUDO_OPS)})"
            )
        chosen |= hits
    return chosen


def unique_name(base: str, taken: set[str]) -> str:
    name = base
    counter = 1
    while name in taken:
        name = f"{base}_{counter}"
        counter += 1
    taken.add(name)
    return name


def subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """The graphs `node` holds (If's branches, Loop's and Scan's bodies), with their attribute names."""
    return [(attr.name, graph) for attr in node.attribute
            for graph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs))]


def inner_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes inside `graph`'s If branches and Loop/Scan bodies (recursively), not its own."""
    found = []
    for node in graph.node:
        for _, sub in subgraphs(node):
            found += [*sub.node, *inner_nodes(sub)]
    return found


def graph_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name in `graph` and in its subgraphs (recursively)."""
    names = {v.name for v in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for _, sub in subgraphs(node):
            names |= graph_names(sub)
    return names


def all_names(model: onnx.ModelProto) -> set[str]:
    """Every name in the model, subgraphs included: a name a pass makes must not be one a subgraph uses."""
    return graph_names(model.graph)


def inline_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its model-local functions (torch.onnx's dynamo exporter writes modules as functions) expanded
    in place, so the precision passes see, convert and quantize the nodes inside them, as TensorRT imports them
    (onnx-tensorrt LocalFunctionImporter). Body nodes are named <function>/<op>_<k> first; the inliner suffixes
    each call's copy (__1, __2 ...). `model` itself is returned when it has no functions."""
    if not model.functions:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for function in model.functions:
        for position, node in enumerate(function.node):
            node.name = node.name or f"{function.name}/{node.op_type}_{position}"
    return onnx.inliner.inline_local_functions(model)


def constant_array(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a Constant node given as a tensor attribute (the form exporters emit), else None."""
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            return numpy_helper.to_array(attr.t)
    return None


def constant_value(index: GraphIndex, name: str) -> np.ndarray | None:
    """The value of tensor `name` when it is an initializer or a Constant node's output, else None."""
    init = index.initializers.get(name)
    if init is not None:
        return numpy_helper.to_array(init)
    producer = index.producer.get(name)
    return constant_array(producer) if producer is not None and producer.op_type == "Constant" else None


def remove_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used |= subgraph_reads(model.graph)
    used |= {o.name for o in model.graph.output}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def input_dependent(model: onnx.ModelProto, shape_ops: Sequence[str] = ("Shape", "Size")) -> set[str]:
    """Tensors whose values derive from a graph input's values (not from its shape only, not constants).
    A node with subgraphs counts as reading what they read from the outer graph."""
    initializers = {init.name for init in model.graph.initializer}
    live = {v.name for v in model.graph.input if v.name not in initializers}
    for node in model.graph.node:
        if node.op_type in shape_ops:
            continue
        reads = [name for name in node.input if name]
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            reads += subgraph_reads(onnx.helper.make_graph([node], "node", [], []))
        if any(name in live for name in reads):
            live.update(name for name in node.output if name)
    return live


def activations(model: onnx.ModelProto, index: GraphIndex, shape_ops: Sequence[str] = ("Shape", "Size")) -> set[str]:
    """Float tensors that carry data derived from a graph input (not shapes, not constants)."""
    return {name for name in input_dependent(model, shape_ops) if index.is_float(name)}


# What an input passes on to its first convolution unchanged in channels (normalization, casts, Q/DQ)
_CHANNEL_KEEPING = {"Add", "Sub", "Mul", "Div", "Cast", "Identity", "QuantizeLinear", "DequantizeLinear"}


def conv_channels(model: onnx.ModelProto) -> dict[str, tuple[int, str]]:
    """Graph input name -> (channels, Conv node) for each input whose first convolution (reached through
    _CHANNEL_KEEPING ops) has constant weights: the channel count that input must have (weight dim 1 x group)."""
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            readers[name].append(node)
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output}
    found = {}
    for value in model.graph.input:
        pending, seen = [value.name], set()
        while pending and value.name not in weights and value.name not in found:
            tensor = pending.pop(0)
            for node in readers.get(tensor, []):
                if node.op_type == "Conv" and node.input[0] == tensor and len(node.input) > 1:
                    kernel = weights.get(node.input[1]) or weights.get(dequantized.get(node.input[1], ""))
                    if kernel and len(kernel) > 1:
                        group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
                        found[value.name] = (kernel[1] * group, node.name or node.output[0])
                        break
                elif node.op_type in _CHANNEL_KEEPING and node.output and node.output[0] not in seen:
                    seen.add(node.output[0])
                    pending.append(node.output[0])
    return found
