"""Max-pool switches and unpooling in ONNX graphs, made TensorRT-ready.

TensorRT's ONNX parser supports neither MaxUnpool nor MaxPool's second output (Indices), and exporters emit
both: torch's dynamo exporter turns nn.MaxUnpool2d into ScatterND fed by MaxPool Indices (plus a 1x1 MaxPool
with Indices that gives each plane's offset); other converters emit MaxUnpool.

`find_unsupported_unpooling` names those nodes (the TensorRT lint uses it). `rewrite_unpooling` rebuilds them
from supported operators for non-overlapping pools (kernel == stride, no padding, floor mode, 2-D):
- the switches become a 0/1 mask over each window with a 1 at the window's first maximum in row-major order
  (the element ONNX Runtime's and PyTorch's MaxPool index points to), from Equal, Mul, ReduceSum and Less;
- a MaxUnpool fed straight by such a pool becomes the mask formulation: the input broadcast over each
  window, times the mask, reshaped, zero-padded to the output_shape input when there is one;
- any other use of the Indices (the dynamo exporter's ScatterND, a graph output) gets the same int64
  indices computed from the mask: a Range over the input's elements, cropped to the windows, summed under
  the mask. ScatterND itself is supported by TensorRT.
It assumes a MaxUnpool's output has its pool's input shape (as PyTorch's output_size=x.shape gives).
Overlapping or padded pools, and nodes inside subgraphs or local functions, are left as they are, and
`find_unsupported_unpooling` still reports them. Windows holding NaN are not handled (no 1 in their mask).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from deploykit.errors import ExportError
from deploykit.io.onnx_graph_checks import default_opset

_DEFAULT_DOMAINS = ("", "ai.onnx")
_MAX_WINDOW = 16  # positions per window: priorities 2**15 .. 1 stay exact in float32 sums


@dataclass(frozen=True)
class UnpoolingNode:
    """A node TensorRT's ONNX parser rejects because of unpooling."""

    name: str  # the node's name, or "<op> -> <first output>" when it has none
    op_type: str
    reason: str
    graph: str = "main"  # "main", or where the subgraph / local function sits

    def __str__(self) -> str:
        return f"{self.name} ({self.op_type}, {self.graph} graph): {self.reason}"


def _label(node: onnx.NodeProto) -> str:
    return node.name or f"{node.op_type} -> {node.output[0] if node.output else '?'}"


def _has_indices(node: onnx.NodeProto) -> bool:
    return (node.op_type == "MaxPool" and node.domain in _DEFAULT_DOMAINS
            and len(node.output) > 1 and node.output[1] != "")


def _walk(nodes: Sequence[onnx.NodeProto], where: str) -> Iterator[tuple[onnx.NodeProto, str]]:
    for node in nodes:
        yield node, where
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _walk(sub.node, f"{_label(node)}.{attr.name}")


def find_unsupported_unpooling(model: onnx.ModelProto) -> list[UnpoolingNode]:
    """MaxUnpool nodes and MaxPool nodes with an Indices output: main graph, subgraphs, local functions."""
    found = []
    walks = [_walk(model.graph.node, "main")]
    walks += [_walk(fn.node, f"function {fn.domain}:{fn.name}") for fn in model.functions]
    for walk in walks:
        for node, where in walk:
            if node.op_type == "MaxUnpool" and node.domain in _DEFAULT_DOMAINS:
                found.append(UnpoolingNode(_label(node), "MaxUnpool",
                                           "TensorRT's ONNX parser does not support MaxUnpool", where))
            elif _has_indices(node):
                found.append(UnpoolingNode(_label(node), "MaxPool",
                                           "TensorRT's ONNX parser does not support MaxPool's Indices output",
                                           where))
    return found


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _window(node: onnx.NodeProto) -> tuple[int, int] | None:
    """(kh, kw) when the pool or unpool has non-overlapping, unpadded 2-D windows, else None."""
    attrs = _attrs(node)
    kernel = list(attrs.get("kernel_shape", []))
    plain = (
        len(kernel) == 2
        and list(attrs.get("strides", [1, 1])) == kernel
        and not any(attrs.get("pads", []))
        and all(d == 1 for d in attrs.get("dilations", [1, 1]))
        and attrs.get("ceil_mode", 0) == 0
        and attrs.get("storage_order", 0) == 0
        and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", b"VALID", "NOTSET", "VALID")
        and kernel[0] * kernel[1] <= _MAX_WINDOW
    )
    return (int(kernel[0]), int(kernel[1])) if plain else None


class _Builder:
    """Emits nodes and initializers with names unique in the model."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def name(self, hint: str) -> str:
        candidate, i = hint, 0
        while candidate in self.taken:
            i += 1
            candidate = f"{hint}_{i}"
        self.taken.add(candidate)
        return candidate

    def const(self, hint: str, value: Any, dtype: type = np.int64) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str, output: str | None = None,
           **attrs: Any) -> str:
        out = output or self.name(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self.name(f"{hint}_node"),
                                           **attrs))
        return out


@dataclass(frozen=True)
class _Switches:
    mask: str  # float32 (N, C, h, kh, w, kw), one 1 per window
    shape6: str
    shape4: str  # (N, C, h*kh, w*kw)
    cropped: str  # (h*kh, w*kw): the part of the input the windows cover
    window: tuple[int, int]


def _switch_mask(b: _Builder, x: str, y: str, window: tuple[int, int], prefix: str) -> _Switches:
    kh, kw = window
    shape_y = b.op("Shape", [y], f"{prefix}/pooled_shape")
    i0, i2, i3, i4 = (b.const(f"{prefix}/i{v}", [v]) for v in (0, 2, 3, 4))
    nc = b.op("Slice", [shape_y, i0, i2], f"{prefix}/nc")
    h = b.op("Slice", [shape_y, i2, i3], f"{prefix}/h")
    w = b.op("Slice", [shape_y, i3, i4], f"{prefix}/w")
    hw = b.op("Slice", [shape_y, i2, i4], f"{prefix}/hw")
    cropped = b.op("Mul", [hw, b.const(f"{prefix}/window", [kh, kw])], f"{prefix}/cropped")
    shape6 = b.op("Concat", [nc, h, b.const(f"{prefix}/kh", [kh]), w, b.const(f"{prefix}/kw", [kw])],
                  f"{prefix}/shape6", axis=0)
    shape4 = b.op("Concat", [nc, cropped], f"{prefix}/shape4", axis=0)
    x6 = _windows(b, x, cropped, shape6, f"{prefix}/x")
    axes = b.const(f"{prefix}/window_axes", [3, 5])
    y6 = b.op("Unsqueeze", [y, axes], f"{prefix}/pooled6")
    is_max = b.op("Cast", [b.op("Equal", [x6, y6], f"{prefix}/is_max_bool")], f"{prefix}/is_max",
                  to=onnx.TensorProto.FLOAT)
    # Row-major positions weighted 2**(n-1) .. 1: a maximum is the window's first one exactly when the
    # weighted count of maxima is below twice its own weight (earlier weights are multiples of that).
    area = kh * kw
    priority = (2.0 ** np.arange(area - 1, -1, -1)).reshape(1, 1, 1, kh, 1, kw)
    weight = b.const(f"{prefix}/priority", priority, np.float32)
    bound = b.const(f"{prefix}/priority_bound", 2 * priority, np.float32)
    weighted = b.op("Mul", [is_max, weight], f"{prefix}/weighted")
    count = b.op("ReduceSum", [weighted, axes], f"{prefix}/weighted_count", keepdims=1)
    first = b.op("Cast", [b.op("Less", [count, bound], f"{prefix}/first_bool")], f"{prefix}/first",
                 to=onnx.TensorProto.FLOAT)
    mask = b.op("Mul", [is_max, first], f"{prefix}/switch_mask")
    return _Switches(mask, shape6, shape4, cropped, window)


def _windows(b: _Builder, t: str, cropped: str, shape6: str, prefix: str) -> str:
    """(N, C, H, W) -> (N, C, h, kh, w, kw) after dropping the floor-mode remainder."""
    zeros = b.const(f"{prefix}/crop_start", [0, 0])
    hw_axes = b.const(f"{prefix}/crop_axes", [2, 3])
    crop = b.op("Slice", [t, zeros, cropped, hw_axes], f"{prefix}/crop")
    return b.op("Reshape", [crop, shape6], f"{prefix}/windows")


def _indices_from_mask(b: _Builder, x: str, sw: _Switches, output: str, prefix: str) -> None:
    """ONNX MaxPool Indices (flat over N*C*H*W, row-major) from the switch mask, as int64."""
    size = b.op("Size", [x], f"{prefix}/numel")
    zero = b.const(f"{prefix}/zero", 0)
    one = b.const(f"{prefix}/one", 1)
    flat = b.op("Range", [zero, size, one], f"{prefix}/flat_ids")
    ids = b.op("Reshape", [flat, b.op("Shape", [x], f"{prefix}/input_shape")], f"{prefix}/ids")
    ids6 = _windows(b, ids, sw.cropped, sw.shape6, f"{prefix}/ids")
    mask = b.op("Cast", [sw.mask], f"{prefix}/mask_int", to=onnx.TensorProto.INT64)
    picked = b.op("Mul", [ids6, mask], f"{prefix}/picked")
    axes = b.const(f"{prefix}/sum_axes", [3, 5])
    b.op("ReduceSum", [picked, axes], f"{prefix}/indices", output=output, keepdims=0)


def _unpool_from_mask(b: _Builder, node: onnx.NodeProto, sw: _Switches, dtype: int, prefix: str) -> None:
    mask = sw.mask
    if dtype != onnx.TensorProto.FLOAT:
        mask = b.op("Cast", [mask], f"{prefix}/mask_cast", to=dtype)
    axes = b.const(f"{prefix}/window_axes", [3, 5])
    spread = b.op("Mul", [b.op("Unsqueeze", [node.input[0], axes], f"{prefix}/values6"), mask],
                  f"{prefix}/placed")
    has_shape = len(node.input) > 2 and node.input[2] != ""
    out = b.op("Reshape", [spread, sw.shape4], f"{prefix}/unpooled",
               output=None if has_shape else node.output[0])
    if has_shape:
        target = b.op("Slice", [node.input[2], b.const(f"{prefix}/i2", [2]), b.const(f"{prefix}/i4", [4])],
                      f"{prefix}/target_hw")
        extra = b.op("Sub", [target, sw.cropped], f"{prefix}/remainder")
        pads = b.op("Concat", [b.const(f"{prefix}/no_pad", [0] * 6), extra], f"{prefix}/pads", axis=0)
        b.op("Pad", [out, pads], f"{prefix}/pad", output=node.output[0])


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is only a convenience here: unknown types fall back to float
        inferred = model
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}


def _taken_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {n.name for n in g.node} | {i.name for i in g.initializer} | {v.name for v in g.input}
    for node in g.node:
        names.update(node.input)
        names.update(node.output)
    return names


def rewrite_unpooling(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with the main graph's switch unpooling rebuilt from TensorRT-supported operators."""
    if (default_opset(model) or 0) < 13:
        raise ExportError(f"the unpooling rewrite needs ONNX opset 13 or later (model: {default_opset(model)}); "
                          "re-export with opset 18")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    types = _elem_types(out)
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    b = _Builder(_taken_names(out))
    pools: dict[str, _Switches] = {}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        window = _window(node) if _has_indices(node) else None
        if window is not None:
            nodes.append(_rewrite_pool(b, node, window, users, outputs, pools))
        elif node.op_type == "MaxUnpool" and _window(node) == getattr(pools.get(node.input[1]), "window", 0):
            dtype = types.get(node.input[0]) or onnx.TensorProto.FLOAT
            _unpool_from_mask(b, node, pools[node.input[1]], dtype, f"{_label(node)}/unpool")
        else:
            nodes.append(node)
            continue
        nodes.extend(b.nodes)
        b.nodes.clear()
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(b.initializers)
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    kept = [v for v in graph.value_info if v.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return out


def _rewrite_pool(b: _Builder, node: onnx.NodeProto, window: tuple[int, int],
                  users: dict[str, list[onnx.NodeProto]], outputs: set[str],
                  pools: dict[str, _Switches]) -> onnx.NodeProto:
    """The pool without its Indices output; emits the mask, and the indices when something else uses them."""
    prefix = f"{_label(node)}/switches"
    indices = node.output[1]
    sw = _switch_mask(b, node.input[0], node.output[0], window, prefix)
    pools[indices] = sw
    others = [u for u in users.get(indices, []) if not (u.op_type == "MaxUnpool" and _window(u) == window)]
    if others or indices in outputs:
        _indices_from_mask(b, node.input[0], sw, indices, prefix)
    pooled = onnx.NodeProto()
    pooled.CopyFrom(node)
    del pooled.output[1:]
    return pooled
