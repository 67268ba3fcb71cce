"""Cross-layer equalization (CLE): rescale the channels between two convolutions so that per-tensor INT8
ranges fit every channel, leaving the float function unchanged.

For Conv1 -> ReLU -> Conv2, ReLU(x / s) = ReLU(x) / s for s > 0, so dividing output channel i of Conv1
(weights and bias) by s_i and multiplying Conv2's input channel i by s_i computes the same function
(Nagel et al., "Data-Free Quantization through Weight Equalization and Bias Correction", ICCV 2019). With
s_i = sqrt(r1_i / r2_i), r1_i the range of Conv1's output channel i and r2_i that of Conv2's weights reading
channel i, both become sqrt(r1_i r2_i): the channels' ranges meet in the middle. Chains of pairs (MobileNetV2's
expand -> depthwise -> project) are equalized in turn, a few rounds until the scales settle, as in the paper.
Depthwise pairs work the same way: a depthwise Conv2's "input channel i" is its output channel i's kernel,
and a depthwise Conv1's output channel i is one kernel.

ReLU6 (Clip(0, 6)) does not commute with the scaling: clip(x / s, 0, 6) = clip(x, 0, 6 s) / s, so channel i's
clip point moves to 6 / s_i. The DFQ paper replaces ReLU6 by ReLU, which changes the model; here the
Clip(0, c) becomes Relu followed by Min with the per-channel bounds c / s_i (a [C, 1, 1] constant), which is
exactly the original function. The quantized unit then ends after the Min (deploykit.calib.qdq.unit_output),
so the INT8 graph quantizes the same tensor as before. `relu6=False` leaves Clip pairs alone.

Only pairs whose intermediate tensors have exactly one reader are equalized (a tensor that also feeds a
residual Add or a Concat would see the rescaled channels). Weights are float32 initializers of 2-D convolutions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from deploykit.graph.tensors import (
    GraphIndex,
    all_names,
    constant_value,
    ensure_node_names,
    index_graph,
    unique_name,
)

SCALE_LIMITS = (1e-4, 1e4)  # a channel with (almost) no weights must not blow the other layer up


@dataclass(frozen=True)
class Equalization:
    """--int8-equalize (deploykit.calib.equalize): which Conv -> activation -> Conv pairs are equalized."""

    relu: bool = True  # Conv -> Relu -> Conv
    relu6: bool = True  # Conv -> Clip(0, c) -> Conv, with per-channel clip bounds
    rounds: int = 8  # passes over all pairs (chains share layers)

    @property
    def enabled(self) -> bool:
        return (self.relu or self.relu6) and self.rounds > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Pair:
    first: str  # Conv node names
    activation: str  # the Relu or Clip node between them
    second: str
    clip: float | None  # Clip's upper bound (None for Relu)


@dataclass
class Equalized:
    model: onnx.ModelProto
    pairs: list[Pair]

    def report(self) -> dict[str, Any]:
        return {"pairs": len(self.pairs), "relu6_pairs": sum(p.clip is not None for p in self.pairs)}


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _single_reader(index: GraphIndex, tensor: str, outputs: set[str]) -> onnx.NodeProto | None:
    readers = index.consumers.get(tensor, [])
    if len(readers) != 1 or tensor in outputs:
        return None
    return readers[0][0]


def _clip_bounds(node: onnx.NodeProto, index: GraphIndex) -> tuple[float, float] | None:
    """(low, high) of a Clip with constant scalar bounds, else None."""
    bounds = []
    for position in (1, 2):
        if len(node.input) <= position or not node.input[position]:
            return None
        value = constant_value(index, node.input[position])
        if value is None or value.size != 1:
            return None
        bounds.append(float(value.reshape(-1)[0]))
    return bounds[0], bounds[1]


def _float_weight(index: GraphIndex, node: onnx.NodeProto) -> bool:
    """A 2-D Conv whose weight (and bias, if any) are float32 initializers: what equalization rescales."""
    init = index.initializers.get(node.input[1]) if len(node.input) > 1 else None
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    bias_ok = bias is None or (bias in index.initializers
                               and index.initializers[bias].data_type == onnx.TensorProto.FLOAT)
    return init is not None and init.data_type == onnx.TensorProto.FLOAT and len(init.dims) == 4 and bias_ok


def find_pairs(model: onnx.ModelProto, options: Equalization) -> list[Pair]:
    """Conv -> Relu | Clip(0, c) -> Conv pairs with single readers and float 2-D weights."""
    index = index_graph(model, infer_types=False)
    outputs = {o.name for o in model.graph.output}
    pairs: list[Pair] = []
    for node in model.graph.node:
        if node.op_type != "Conv" or not _float_weight(index, node):
            continue
        act = _single_reader(index, node.output[0], outputs)
        second = _single_reader(index, act.output[0], outputs) if act is not None else None
        if act is None or second is None or second.op_type != "Conv" or not _float_weight(index, second):
            continue
        if second.input[0] != act.output[0]:
            continue
        if act.op_type == "Relu" and options.relu:
            pairs.append(Pair(node.name, act.name, second.name, None))
        elif act.op_type == "Clip" and options.relu6:
            bounds = _clip_bounds(act, index)
            if bounds is not None and bounds[0] == 0.0 and bounds[1] > 0.0:
                pairs.append(Pair(node.name, act.name, second.name, bounds[1]))
    return pairs


def _input_channel_ranges(weight: np.ndarray, groups: int) -> np.ndarray:
    """max |w| over the weights of a (grouped) Conv that read each of its input channels."""
    out_channels, per_group = weight.shape[0], weight.shape[1]
    per_out = out_channels // groups
    blocks = np.abs(weight).reshape(groups, per_out, per_group, -1).max(axis=(1, 3))  # (groups, per_group)
    return blocks.reshape(-1)


def _scale_input_channels(weight: np.ndarray, groups: int, scale: np.ndarray) -> np.ndarray:
    out_channels, per_group = weight.shape[0], weight.shape[1]
    per_out = out_channels // groups
    factors = scale.reshape(groups, 1, per_group, 1, 1)
    shaped = weight.reshape(groups, per_out, per_group, *weight.shape[2:])
    return (shaped * factors).reshape(weight.shape)


class _Weights:
    """The float weights and biases being rescaled, written back into the model once at the end."""

    def __init__(self, model: onnx.ModelProto, index: GraphIndex) -> None:
        self.model, self.index = model, index
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            self.arrays[name] = numpy_helper.to_array(self.index.initializers[name]).astype(np.float32)
        return self.arrays[name]

    def write(self) -> None:
        for init in self.model.graph.initializer:
            if init.name in self.arrays:
                init.CopyFrom(numpy_helper.from_array(self.arrays[init.name].astype(np.float32), init.name))


def _private(model: onnx.ModelProto, index: GraphIndex, pairs: list[Pair]) -> None:
    """Give every weight or bias initializer another node also reads its own copy (scaling must not leak)."""
    taken = all_names(model)
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    nodes = {n.name: n for n in model.graph.node}
    for name in {p.first for p in pairs} | {p.second for p in pairs}:
        node = nodes[name]
        for position in range(1, min(3, len(node.input))):
            tensor = node.input[position]
            if tensor in index.initializers and readers.get(tensor, 0) > 1:
                copy = unique_name(f"{tensor}_{name}", taken)
                model.graph.initializer.append(numpy_helper.from_array(
                    numpy_helper.to_array(index.initializers[tensor]), copy))
                node.input[position] = copy
                readers[tensor] -= 1


def equalize(model: onnx.ModelProto, options: Equalization) -> Equalized:
    """A copy of `model` with every pair find_pairs finds equalized (module docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    ensure_node_names(model.graph)
    pairs = find_pairs(model, options) if options.enabled else []
    if not pairs:
        return Equalized(model, [])
    _private(model, index_graph(model, infer_types=False), pairs)
    index = index_graph(model, infer_types=False)
    nodes = {n.name: n for n in model.graph.node}
    weights = _Weights(model, index)
    clips = {p.activation: np.full(_out_channels(weights, nodes[p.first]), p.clip, np.float32)
             for p in pairs if p.clip is not None}
    for _ in range(options.rounds):
        for pair in pairs:
            first, second = nodes[pair.first], nodes[pair.second]
            w1, w2 = weights.get(first.input[1]), weights.get(second.input[1])
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            r2 = _input_channel_ranges(w2, _group(second))
            scale = np.ones_like(r1)
            valid = (r1 > 0) & (r2 > 0)
            scale[valid] = np.sqrt(r1[valid] / r2[valid])
            scale = np.clip(scale, *SCALE_LIMITS).astype(np.float32)
            weights.arrays[first.input[1]] = w1 / scale.reshape(-1, 1, 1, 1)
            if len(first.input) > 2 and first.input[2]:
                weights.arrays[first.input[2]] = weights.get(first.input[2]) / scale
            weights.arrays[second.input[1]] = _scale_input_channels(w2, _group(second), scale)
            if pair.activation in clips:
                clips[pair.activation] = clips[pair.activation] / scale
    weights.write()
    _per_channel_clips(model, clips)
    return Equalized(model, pairs)


def _out_channels(weights: _Weights, node: onnx.NodeProto) -> int:
    return int(weights.get(node.input[1]).shape[0])


def _per_channel_clips(model: onnx.ModelProto, clips: dict[str, np.ndarray]) -> None:
    """Each equalized Clip(0, c) -> Relu + Min(per-channel bounds) (module docstring), in place."""
    taken = all_names(model)
    rebuilt: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name not in clips:
            rebuilt.append(node)
            continue
        relu_out = unique_name(f"{node.output[0]}_relu", taken)
        bound = unique_name(f"{node.name}_channel_bounds", taken)
        model.graph.initializer.append(numpy_helper.from_array(clips[node.name].reshape(-1, 1, 1), bound))
        rebuilt.append(helper.make_node("Relu", [node.input[0]], [relu_out], name=node.name))
        rebuilt.append(helper.make_node("Min", [relu_out, bound], [node.output[0]],
                                        name=unique_name(f"{node.name}_channel_clip", taken)))
    del model.graph.node[:]
    model.graph.node.extend(rebuilt)
