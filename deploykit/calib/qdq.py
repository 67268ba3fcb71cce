"""Explicit INT8 quantization: QuantizeLinear/DequantizeLinear pairs from precomputed ranges.

What is quantized (TensorRT's placement rules, which ONNX Runtime also fuses):
- the weighted ops Conv, ConvTranspose, Gemm and MatMul with a constant weight: their activation input gets a
  per-tensor Q/DQ, their weight becomes an INT8 initializer with per-channel scales and a DequantizeLinear
  (axis 0 for Conv and Gemm with transB, axis 1 for MatMul: the output channels). ConvTranspose weights
  (C_in, C_out/groups, kH, kW) are quantized on axis 0, per *input* channel: TensorRT's deconvolution kernels
  assume it and do not support axis 1 (NVIDIA/TensorRT#2380; axis-1 weights gave wrong INT8 results in #1694,
  #1699, and pytorch-quantization moved its ConvTranspose default to axis 0). ONNX Runtime 1.32 on CPU runs a
  DequantizeLinear -> ConvTranspose in float whichever the axis (no QLinearConvTranspose fusion), so the same
  graph serves both backends: tests/calib/test_qdq_trt.py checks it exactly and on DeconvNet and U-Net.
  Biases stay float: TensorRT folds them in higher precision.
- Symmetric everywhere: zero point 0 and scale = amax / 127 for activations; weights use [-127, 127].
- Nothing else computes in INT8. Resize (TensorRT has no INT8 Resize), pooling, concatenation, activations
  and the rest read dequantized values and run in float. A Q/DQ on a node's input is read only by the
  quantized consumers, so keeping a node in float (--keep-float) removes its quantization error entirely.
- A weighted node followed only by Relu or Clip(min >= 0) counts as one unit with it: the Q/DQ goes after the
  activation (TensorRT fuses Conv+ReLU and quantizes after it; ONNX Runtime can then drop the activation, see
  deploykit.backends.onnxruntime.compile). In a plain chain, "inputs" and "inputs+outputs" then coincide.
- quantize_outputs (the ONNX Runtime layout, "inputs+outputs"): the output of a quantized unit also gets a Q/DQ,
  read by all its consumers, so ONNX Runtime can fuse DQ -> Conv -> Q into QLinearConv even where no
  activation follows (MobileNetV2's projections, residual Adds); without it those convs run in float behind a
  DequantizeLinear. TensorRT prefers inputs only (its Q/DQ placement guide) and fuses the rest itself.
  Then keeping a node in float leaves its input quantized when its producer is a quantized unit.
  In this layout every consumer of a quantized tensor reads the same DequantizeLinear (but weighted nodes kept
  in float and nodes --keep-float names, which read the float tensor): a residual Add's output feeds the next
  block's conv and the next Add, and with only the conv reading the Q/DQ the next Add kept the float tensor
  alive, so OpenVINO ran each residual chain as separate float and INT8 blocks (11 float blocks on
  MobileNetV2 against NNCF's 1; sharing the DequantizeLinear on those 5 Add edges measured 185 ms against
  OpenVINO + NNCF's 174 ms on a loaded machine, pixel agreement 0.9683, benchmarks/bench_cpu_peers.py).
  Outputs that reach the graph output without passing another quantized node, typically the final logits
  conv, stay float either way: nothing downstream runs in INT8, so quantizing them would only round class
  scores to 256 levels and flip labels at class boundaries, for no speed gain.

Placement for TensorRT's fusions (TensorRT developer guide, "Explicit Quantization": Q/DQ layer-placement
recommendations; deploykit.graph.qdq_fusion checks the result):
- Residual Add (layout "inputs"): an Add whose one input is the direct output of a quantized Conv reads its
  other (skip) input through the skip tensor's Q/DQ, so TensorRT fuses the Add into the convolution's epilogue
  in INT8 ("quantize the residual input": the precision of the Add's other input decides the fused output's).
- Concat: a Concat whose output is quantized and whose inputs are quantized too gets one scale for all of them
  (the largest amax of the group; chained Concats join one group). With different scales TensorRT must
  requantize each input before concatenating; with one scale the Concat is a copy in INT8.
- No pair TensorRT cannot fuse: in layout "inputs" every DequantizeLinear is read by a convolution, GEMM or a
  residual Add, never by Resize (no INT8 Resize, NVIDIA/TensorRT#2976), a pointwise op (Sigmoid, Mul, ...) or
  the graph output, where a dequantize would run as its own kernel; the ONNX Runtime layout "inputs+outputs"
  has such pairs by design (ONNX Runtime fuses them into QLinear ops) and the lint reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.graph.fp16 import KeptNode
from deploykit.graph.tensors import (
    GraphIndex,
    activations,
    all_names,
    constant_array,
    constant_value,
    ensure_node_names,
    index_graph,
    match_nodes,
    remove_unused_initializers,
    subgraphs,
    unique_name,
)
from deploykit.io.metadata import write_observed_ranges

QMAX = 127
LAYOUTS = ("inputs", "inputs+outputs")  # Q/DQ placements (module docstring); each backend entry names its own
SHAPE_ONLY = frozenset({"Shape", "Size"})  # ops that read a tensor's shape, not its values
MIN_AMAX = 1e-8  # a tensor that was always zero still needs a positive scale


@dataclass(frozen=True)
class QuantNode:
    name: str
    op_type: str
    activation: str  # the input tensor quantized per tensor
    weight: str  # the constant weight, quantized per channel
    axis: int  # the weight's output-channel axis


@dataclass
class QdqResult:
    model: onnx.ModelProto
    quantized: list[str]  # nodes computing in INT8
    kept: list[KeptNode] = field(default_factory=list)  # weighted nodes left in float, with the reason
    tensors: list[str] = field(default_factory=list)  # activation tensors that got a Q/DQ pair
    layout: str = "inputs"
    residual_adds: list[str] = field(default_factory=list)  # Adds reading a quantized skip beside a conv output
    shared_concats: list[str] = field(default_factory=list)  # Concats whose quantized inputs share one scale

    def report(self) -> dict[str, object]:
        return {"quantized_nodes": len(self.quantized), "kept_float": [k.to_dict() for k in self.kept],
                "qdq_tensors": len(self.tensors), "qdq_layout": self.layout,
                "residual_adds_quantized": len(self.residual_adds), "shared_scale_concats": len(self.shared_concats)}


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _weight_axis(node: onnx.NodeProto, weight: np.ndarray) -> int | None:
    """The output-channel axis of a weighted node's constant weight, or None if it is not quantizable."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 0  # per input channel, as TensorRT requires (module docstring)
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    if node.op_type == "MatMul" and weight.ndim == 2:
        return 1
    return None


WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _inside_subgraphs(node: onnx.NodeProto, where: str = "") -> list[KeptNode]:
    """The weighted nodes inside an If/Loop/Scan node's bodies, which stay float: a Q/DQ needs a calibration range
    of its input, and ONNX Runtime can output only main-graph tensors (the FP16 pass does convert them)."""
    kept = []
    for attr, body in subgraphs(node):
        place = f"{where}{node.name or node.op_type}'s {attr}"
        for inner in body.node:
            if inner.op_type in WEIGHTED:
                kept.append(KeptNode(inner.name or f"{place}/{inner.op_type}", inner.op_type,
                                     f"inside {place}: INT8 calibration cannot observe tensors inside If/Loop/Scan "
                                     "bodies, so it stays float"))
            kept += _inside_subgraphs(inner, f"{place}/")
    return kept


def weighted_nodes(model: onnx.ModelProto, index: GraphIndex, keep: Iterable[str] = (),
                   chosen: Iterable[str] = (), reasons: Mapping[str, str] | None = None
                   ) -> tuple[list[QuantNode], list[KeptNode]]:
    """The weighted nodes that can be quantized, and those that cannot or are kept (with reasons): `keep` by
    --keep-float, `chosen` by the accuracy budget, `reasons` (node -> why) by the pass's own defaults."""
    reasons = reasons or {}
    live = activations(model, index)
    keep, chosen = set(keep), set(chosen)
    nodes: list[QuantNode] = []
    kept: list[KeptNode] = []
    for node in model.graph.node:
        kept += _inside_subgraphs(node)
        if node.op_type not in WEIGHTED or len(node.input) < 2:
            continue
        weight = index.initializers.get(node.input[1])
        if node.input[0] not in live:
            continue  # not on the data path (e.g. a constant MatMul)
        if weight is None or weight.data_type != TensorProto.FLOAT:
            kept.append(KeptNode(node.name, node.op_type, "weight is not a float32 initializer"))
            continue
        axis = _weight_axis(node, numpy_helper.to_array(weight))
        if axis is None:
            kept.append(KeptNode(node.name, node.op_type, "weight is not a 2-D matrix"))
        elif node.name in keep:
            kept.append(KeptNode(node.name, node.op_type, "kept by --keep-float"))
        elif node.name in reasons:
            kept.append(KeptNode(node.name, node.op_type, reasons[node.name]))
        elif node.name in chosen:
            kept.append(KeptNode(node.name, node.op_type, "kept by the accuracy budget"))
        else:
            nodes.append(QuantNode(node.name, node.op_type, node.input[0], node.input[1], axis))
    return nodes, kept


def _reaches_quantized(model: onnx.ModelProto, index: GraphIndex, quantized: set[str]) -> set[str]:
    """Nodes from which some quantized node is reachable (inclusive), by a reverse topological sweep."""
    reach: set[str] = set()
    for node in reversed(model.graph.node):
        downstream = (c.name for o in node.output if o for c, _ in index.consumers.get(o, []))
        if node.name in quantized or any(name in reach for name in downstream):
            reach.add(node.name)
    return reach


def calibration_tensors(model: onnx.ModelProto) -> list[str]:
    """Every tensor an INT8 build of `model` may quantize (for any --keep-float): inputs and outputs of the
    weighted nodes. Calibrating all of them once lets the budget search try assignments without new data."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    ensure_node_names(model.graph)
    index = index_graph(model)
    nodes, _ = weighted_nodes(model, index)
    names = {n.name for n in nodes}
    tensors: list[str] = []
    for node in model.graph.node:
        if node.name in names:
            tensors.extend([node.input[0], node.output[0], unit_output(node, index)])
    live = activations(model, index)
    for node in model.graph.node:  # residual skips (see _residual_skips), for any keep set
        if node.op_type == "Add" and len(node.input) == 2:
            tensors.extend(name for name in node.input if name in live)
    return list(dict.fromkeys(tensors))


def _quantize_weight(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel symmetric INT8 weight and its scales (narrow range [-127, 127])."""
    moved = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    scale = np.maximum(np.abs(moved).max(axis=1), MIN_AMAX) / QMAX
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.round(weight / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    return q, scale.astype(np.float32)


class _Inserter:
    def __init__(self, model: onnx.ModelProto,
                 quantized: Callable[[str, int], tuple[np.ndarray, np.ndarray]]) -> None:
        self.taken = all_names(model)
        self.initializers: list[onnx.TensorProto] = []
        self.weights: dict[tuple[str, int], str] = {}
        self.quantized = quantized

    def scalar(self, base: str, value: np.ndarray) -> str:
        name = unique_name(base, self.taken)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def qdq_pair(self, tensor: str, amax: float) -> tuple[list[onnx.NodeProto], str]:
        scale = self.scalar(f"{tensor}_scale", np.array(max(amax, MIN_AMAX) / QMAX, dtype=np.float32))
        zero = self.scalar(f"{tensor}_zero_point", np.array(0, dtype=np.int8))
        quantized = unique_name(f"{tensor}_quantized", self.taken)
        dequantized = unique_name(f"{tensor}_dequantized", self.taken)
        nodes = [
            helper.make_node("QuantizeLinear", [tensor, scale, zero], [quantized],
                             name=unique_name(f"{tensor}_QuantizeLinear", self.taken)),
            helper.make_node("DequantizeLinear", [quantized, scale, zero], [dequantized],
                             name=unique_name(f"{tensor}_DequantizeLinear", self.taken)),
        ]
        return nodes, dequantized

    def weight(self, name: str, axis: int) -> tuple[list[onnx.NodeProto], str]:
        """An INT8 initializer + DequantizeLinear (once per weight and axis; shared by every reader)."""
        if (name, axis) in self.weights:
            return [], self.weights[(name, axis)]
        q, scale = self.quantized(name, axis)
        q_name = self.scalar(f"{name}_quantized", q)
        scale_name = self.scalar(f"{name}_scale", scale)
        zero_name = self.scalar(f"{name}_zero_point", np.zeros(scale.shape, dtype=np.int8))
        out = unique_name(f"{name}_dequantized", self.taken)
        node = helper.make_node("DequantizeLinear", [q_name, scale_name, zero_name], [out], axis=axis,
                                name=unique_name(f"{name}_DequantizeLinear", self.taken))
        self.weights[(name, axis)] = out
        return [node], out


def _clip_floor(node: onnx.NodeProto, index: GraphIndex) -> float | None:
    """Clip's lower bound when it is a constant, else None."""
    if len(node.input) < 2 or not node.input[1]:
        return None
    init = index.initializers.get(node.input[1])
    producer = index.producer.get(node.input[1])
    value = numpy_helper.to_array(init) if init is not None else (
        constant_array(producer) if producer is not None and producer.op_type == "Constant" else None)
    return None if value is None or value.size != 1 else float(value.reshape(-1)[0])


def unit_output(node: onnx.NodeProto, index: GraphIndex) -> str:
    """The tensor that stands for a weighted node's output: the output of a Relu or Clip(min >= 0) that is
    its only consumer (TensorRT fuses Conv+ReLU and quantizes after it; ONNX Runtime can then drop the
    activation), else the node's own output."""
    consumers = index.consumers.get(node.output[0], [])
    if len(consumers) == 1:
        follower = consumers[0][0]
        floor = _clip_floor(follower, index) if follower.op_type == "Clip" else None
        if follower.op_type == "Relu" or (floor is not None and floor >= 0.0):
            return channel_clip(follower, index) or follower.output[0]
    return node.output[0]


def channel_clip(activation: onnx.NodeProto, index: GraphIndex) -> str | None:
    """The output of a Min by non-negative constants that alone reads `activation`'s output: an equalized
    ReLU6 (deploykit.calib.equalize), part of the quantized unit; else None."""
    readers = index.consumers.get(activation.output[0], [])
    if len(readers) != 1 or readers[0][0].op_type != "Min" or len(readers[0][0].input) != 2:
        return None
    minimum = readers[0][0]
    other = minimum.input[1 - readers[0][1]]
    bound = constant_value(index, other)
    return minimum.output[0] if bound is not None and bound.size and float(bound.min()) >= 0.0 else None


def _residual_skips(model: onnx.ModelProto, index: GraphIndex, names: set[str]) -> dict[str, str]:
    """Add node -> its skip input, for each Add with exactly one input produced directly by a quantized Conv
    (TensorRT fuses such an Add into the convolution's epilogue when the other input is INT8)."""
    skips: dict[str, str] = {}
    live = activations(model, index)
    order = {node.name: position for position, node in enumerate(model.graph.node)}
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or not all(i in live for i in node.input):
            continue
        from_conv = [i for i in node.input
                     if (p := index.producer.get(i)) is not None and p.name in names and p.op_type == "Conv"]
        if not from_conv:
            continue
        # Both from convs (a stage's first residual: the previous projection + this one): the later conv fuses.
        fused = max(from_conv, key=lambda i: order[index.producer[i].name])
        skips[node.name] = next(i for i in node.input if i != fused)
    return skips


def _readers(model: onnx.ModelProto, index: GraphIndex, chosen: list[QuantNode], quantize_outputs: bool,
             floats: Iterable[str] = ()) -> dict[str, set[str]]:
    """tensor -> names of the nodes that read its dequantized version. In the "inputs+outputs" layout every
    consumer of a quantized tensor reads the same DequantizeLinear, except `floats` (weighted nodes kept in
    float and the nodes --keep-float names): see the module docstring on residual Adds."""
    names, floats = {n.name for n in chosen}, set(floats)
    readers: dict[str, set[str]] = {}
    for node in chosen:
        readers.setdefault(node.activation, set()).add(node.name)
    if not quantize_outputs:
        for add, skip in _residual_skips(model, index, names).items():
            readers.setdefault(skip, set()).add(add)
    if quantize_outputs:
        reach = _reaches_quantized(model, index, names)
        for node in model.graph.node:
            if node.name not in names:
                continue
            output = unit_output(node, index)
            consumers = index.consumers.get(output, [])
            if any(c.name in reach for c, _ in consumers):
                readers.setdefault(output, set()).update(c.name for c, _ in consumers)
        for tensor, read in readers.items():  # Shape/Size read no values: they keep the float tensor
            read.update(c.name for c, _ in index.consumers.get(tensor, [])
                        if c.name not in floats and c.op_type not in SHAPE_ONLY)
    return readers


def _shared_concat_scales(model: onnx.ModelProto, readers: Mapping[str, set[str]], amax: Mapping[str, float]
                          ) -> tuple[dict[str, float], list[str]]:
    """One amax for each group of quantized tensors joined by Concats (output and quantized inputs), and the
    Concats that shared one (module docstring: TensorRT requantizes Concat inputs of different scales)."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    concats: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Concat" or node.output[0] not in readers:
            continue
        quantized = [i for i in node.input if i in readers]
        if quantized:
            concats.append(node.name)
            for name in quantized:
                parent[root(name)] = root(node.output[0])
    groups: dict[str, float] = {}
    for name in parent:
        groups[root(name)] = max(groups.get(root(name), 0.0), amax[name])
    return {name: groups[root(name)] for name in parent}, concats


def _set_bias(node: onnx.NodeProto, name: str) -> None:
    """Point a Conv / ConvTranspose / Gemm at bias `name` (its third input; added when it had none)."""
    if len(node.input) > 2:
        node.input[2] = name
    else:
        node.input.append(name)


class QdqBuilder:
    """Builds Q/DQ variants of one model for different keep sets; the graph index, the --keep-float matches
    and the quantized weights are computed once (the accuracy-budget search builds many variants)."""

    def __init__(self, model: onnx.ModelProto, amax: Mapping[str, float], *, keep_float: Iterable[str] = (),
                 quantize_outputs: bool = True, float_grouped: str = "",
                 observed: Mapping[str, tuple[float, float]] | None = None) -> None:
        """float_grouped: when not empty, depthwise and grouped convolutions stay float, with that reason;
        observed: tensor -> (min, max) seen in calibration, recorded in each build for the CPU lowerings
        (deploykit.io.metadata.write_observed_ranges)."""
        self.observed = dict(observed or {})
        self.model = onnx.ModelProto.FromString(model.SerializeToString())
        ensure_node_names(self.model.graph)
        self.index = index_graph(self.model)
        self.amax = dict(amax)
        self.keep = match_nodes(self.model.graph, keep_float, self.index, option="--keep-float")
        self.reasons = {n.name: float_grouped for n in self.model.graph.node
                        if float_grouped and n.op_type == "Conv" and _attr(n, "group", 1) > 1}
        self.quantize_outputs = quantize_outputs
        self._weights: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        # node -> its float bias with the shift bias correction measured (deploykit.calib.bias_correction)
        self.biases: dict[str, np.ndarray] = {}

    def candidates(self) -> list[str]:
        """Weighted nodes that would be quantized with nothing kept by the budget."""
        nodes, _ = weighted_nodes(self.model, self.index, self.keep, reasons=self.reasons)
        return [n.name for n in nodes if n.activation in self.amax]

    def specs(self, names: Iterable[str]) -> dict[str, QuantNode]:
        """The quantization spec (weight, axis) of each of the named weighted nodes that can be quantized."""
        wanted = set(names)
        nodes, _ = weighted_nodes(self.model, self.index)
        return {n.name: n for n in nodes if n.name in wanted}

    def weight_codes(self, node: QuantNode) -> tuple[np.ndarray, np.ndarray]:
        """A node's INT8 weight codes and per-channel scales (rounded to nearest unless set_codes chose)."""
        return self._weight(node.weight, node.axis)

    def set_codes(self, node: QuantNode, codes: np.ndarray) -> None:
        """Use `codes` (same grid: the per-channel scales stay) for a node's weight in every later build."""
        _, scale = self._weight(node.weight, node.axis)
        self._weights[(node.weight, node.axis)] = (codes.astype(np.int8), scale)

    def set_float(self, node: str, weight: np.ndarray, bias: np.ndarray) -> None:
        """Replace a weighted node's float weight and bias in the model every later build derives from (its
        codes are rounded again from the new weight); a node without a bias gets one."""
        spec = self.specs([node])[node]
        self.index.initializers[spec.weight].CopyFrom(numpy_helper.from_array(weight.astype(np.float32),
                                                                              spec.weight))
        self._weights = {key: value for key, value in self._weights.items() if key[0] != spec.weight}
        target = next(n for n in self.model.graph.node if n.name == node)
        if len(target.input) > 2 and target.input[2] in self.index.initializers:
            name = target.input[2]
            self.index.initializers[name].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), name))
            return
        name = unique_name(f"{node}_bias", all_names(self.model))
        self.model.graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), name))
        self.index.initializers[name] = self.model.graph.initializer[-1]
        self.index.types[name] = TensorProto.FLOAT
        del target.input[2:]
        target.input.append(name)

    def _weight(self, name: str, axis: int) -> tuple[np.ndarray, np.ndarray]:
        if (name, axis) not in self._weights:
            self._weights[(name, axis)] = _quantize_weight(numpy_helper.to_array(self.index.initializers[name]),
                                                           axis)
        return self._weights[(name, axis)]

    def build(self, keep_names: Iterable[str] = ()) -> QdqResult:
        model = onnx.ModelProto.FromString(self.model.SerializeToString())
        graph, index, amax = model.graph, self.index, self.amax
        candidates, kept = weighted_nodes(self.model, index, self.keep, keep_names, self.reasons)
        chosen: list[QuantNode] = []
        for node in candidates:
            if node.activation not in amax:
                kept.append(KeptNode(node.name, node.op_type, f"no calibration range for {node.activation}"))
            else:
                chosen.append(node)
        floats = {k.name for k in kept} | set(self.keep)
        readers = _readers(self.model, index, chosen, self.quantize_outputs, floats)
        readers = {t: r for t, r in readers.items() if t in amax}
        shared, concats = _shared_concat_scales(self.model, readers, amax)
        amax = {**amax, **shared}
        inserter = _Inserter(model, self._weight)
        dequantized: dict[str, str] = {}
        new_nodes: list[onnx.NodeProto] = []
        for tensor in readers:
            if tensor in {v.name for v in graph.input}:
                pair, dequantized[tensor] = inserter.qdq_pair(tensor, amax[tensor])
                new_nodes.extend(pair)
        by_name = {n.name: n for n in chosen}
        for node in graph.node:
            for position, name in enumerate(node.input):
                if name in readers and node.name in readers[name]:
                    node.input[position] = dequantized[name]
            if node.name in by_name:
                spec = by_name[node.name]
                weight_nodes, node.input[1] = inserter.weight(spec.weight, spec.axis)
                new_nodes.extend(weight_nodes)
                if node.name in self.biases:
                    _set_bias(node, inserter.scalar(f"{node.name}_corrected_bias", self.biases[node.name]))
            new_nodes.append(node)
            for output in node.output:
                if output in readers and output not in dequantized:
                    pair, dequantized[output] = inserter.qdq_pair(output, amax[output])
                    new_nodes.extend(pair)
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(inserter.initializers)
        remove_unused_initializers(model)
        if self.observed:
            write_observed_ranges(model, {t: self.observed[t] for t in readers if t in self.observed})
        skips = _residual_skips(self.model, index, set(by_name))
        adds = sorted(add for add, skip in skips.items() if add in readers.get(skip, set()))
        return QdqResult(model=model, quantized=[n.name for n in chosen], kept=kept, tensors=list(readers),
                         layout="inputs+outputs" if self.quantize_outputs else "inputs", residual_adds=adds,
                         shared_concats=concats)


def qdq_from_ranges(
    model: onnx.ModelProto,
    amax: Mapping[str, float],
    *,
    keep_float: Iterable[str] = (),
    keep_names: Iterable[str] = (),
    quantize_outputs: bool = True,
) -> QdqResult:
    """An INT8 Q/DQ copy of `model` (not modified) with activation ranges `amax` (tensor -> max |x|).

    keep_float: node names or op types (or "DepthwiseConv") left in float, checked against the graph;
    keep_names: exact node names left in float (the budget search's choices).
    """
    builder = QdqBuilder(model, amax, keep_float=keep_float, quantize_outputs=quantize_outputs)
    return builder.build(keep_names)
