"""UINT8 activations everywhere: the symmetric INT8 Q/DQ graph lowered to the CPU runtimes' U8S8 form
(deploykit.graph.cpu_int8 applies it for ONNX Runtime and OpenVINO).

Why (issue 15 item 1): ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv only when the DQ input and the Q
output have the same element type (`ConvNodeGroupSelector::Check` in onnxruntime's qdq_selectors.cc; on x86
INT8 activations are not allowed at all), QLinearAdd and QLinearConcat likewise need one type on every input
and output (`BinaryNodeGroupSelector`, `VariadicNodeGroupSelector`). Turning only the Q/DQ pairs after a Relu
into UINT8 left 18 of 61 convolutions of MobileNetV2 DeepLabv3+ with a UINT8 input and an INT8 output: they ran
in float between Transposes. ONNX Runtime's own recipe (U8S8) has one activation type, so every one fuses.

Each activation Q/DQ pair (a scalar INT8 zero point 0, read only by DequantizeLinear nodes) becomes UINT8:
- where the INT8 pass recorded the range it observed on the calibration data (deploykit.io.metadata's
  observed ranges), the asymmetric range [max(min, -127 s), min(max, 127 s)] (widened to hold 0) in 256 steps:
  a skewed tensor (a projection's output between -1 and 10) gets steps up to twice as fine as the symmetric
  pair's. After Relu or Clip(min >= 0) that range starts at 0 (zero point 0; it also ends at the clip's max),
  so ONNX Runtime drops the activation (ReluQuantFusion/ClipQuantFusion). Measured on the trained MSI-Net
  (benchmarks/checkpoints, 240x320, CC against FP32 on benchmarks/data/heldout, 7-bit weights on an AVX2 EPYC):
  0.984 with the symmetric lowering, 0.990 with observed ranges;
- without a recorded range: after Relu or Clip(min >= 0), zero point 0 and scale min(s * 127 / 255, clip max /
  255): the same range [0, 127 s] with steps half as coarse; elsewhere zero point 128 and the same scale:
  u = q + 128 for every value, so the dequantized values are exactly the symmetric graph's (INT8 saturates at
  [-128, 127] s, UINT8 with zero point 128 at the same points).
Weights stay INT8 (the S8 of U8S8). Only the CPU artifacts are lowered; the precision graph TensorRT compiles
keeps zero point 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from deploykit.graph.tensors import GraphIndex, all_names, constant_array, index_graph, unique_name

QMAX = 127
MIDPOINT = 128  # UINT8 zero point that represents INT8 zero


def scalar_value(model: onnx.ModelProto, name: str) -> float | None:
    """The value of a one-element initializer or Constant, else None."""
    for init in model.graph.initializer:
        if init.name == name:
            value = numpy_helper.to_array(init)
            return float(value.reshape(-1)[0]) if value.size == 1 else None
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            array = constant_array(node)
            return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None
    return None


def clip_bounds(model: onnx.ModelProto, node: onnx.NodeProto | None) -> tuple[float, float] | None:
    """(low, high) of a Relu or a Clip with a constant low >= 0, else None."""
    if node is None:
        return None
    if node.op_type == "Relu":
        return (0.0, float("inf"))
    if node.op_type != "Clip" or len(node.input) < 2 or not node.input[1]:
        return None
    low = scalar_value(model, node.input[1])
    high = scalar_value(model, node.input[2]) if len(node.input) > 2 and node.input[2] else float("inf")
    return None if low is None or high is None or low < 0.0 else (low, high)


def _non_negative(model: onnx.ModelProto, index: GraphIndex, node: onnx.NodeProto | None
                  ) -> tuple[float, float] | None:
    """clip_bounds of `node`, or of the activation behind a MaxPool of its Q/DQ'd output (ResNet's stem: the
    pool's Q then matches the Relu's UINT8 zero point 0, and ORT runs the MaxPool on UINT8 between them), or
    of the Relu behind an equalized ReLU6's per-channel Min (up to its largest bound)."""
    bound = _channel_bound(node, index)
    if node is not None and bound is not None:
        behind = clip_bounds(model, index.producer.get(node.input[0]))
        return None if behind is None else (behind[0], min(behind[1], float(bound.max())))
    for _ in range(4):  # MaxPool <- DequantizeLinear <- QuantizeLinear <- Relu, possibly pooled again
        if node is None or node.op_type not in ("MaxPool", "DequantizeLinear", "QuantizeLinear"):
            break
        node = index.producer.get(node.input[0])
    return clip_bounds(model, node)


def _channel_bound(node: onnx.NodeProto | None, index: GraphIndex) -> np.ndarray | None:
    """The non-negative constant bounds of Min(x, bounds), the per-channel clip of an equalized ReLU6
    (deploykit.calib.equalize), else None."""
    if node is None or node.op_type != "Min" or len(node.input) != 2:
        return None
    bound = index.initializers.get(node.input[1])
    value = numpy_helper.to_array(bound) if bound is not None else None
    return value if value is not None and value.size and float(value.min()) >= 0.0 else None


def quantized_mins(model: onnx.ModelProto) -> int:
    """Run each equalized ReLU6's per-channel Min on UINT8, in place: x -> Min(bounds) -> Q becomes
    x -> Q -> Min(Q(bounds)), exactly the same codes (rounding is monotone: min(q(x), q(b)) = q(min(x, b))).
    ONNX Runtime fuses DQ -> Conv -> (Relu) -> Q into QLinearConv only with nothing between Conv and Q: with
    the float Min there, 34 of 61 convolutions of an equalized DeepLabv3+ MobileNetV2 ran in float. How many
    Mins changed (after unsigned_activations: the Q must be UINT8)."""
    index = index_graph(model, infer_types=False)
    taken = all_names(model)
    produced_at = {output: i for i, node in enumerate(model.graph.node) for output in node.output}
    moved: dict[int, int] = {}  # position of a Min -> position of the QuantizeLinear now run before it
    for at, node in enumerate(model.graph.node):
        bound, readers = _channel_bound(node, index), index.consumers.get(node.output[0], [])
        if bound is None or len(readers) != 1 or readers[0][0].op_type != "QuantizeLinear":
            continue
        q = readers[0][0]
        zero = index.initializers.get(q.input[2]) if len(q.input) > 2 else None
        if zero is None or zero.data_type != TensorProto.UINT8 or not _symmetric_or_unsigned(q, index):
            continue
        moved[at] = produced_at[q.output[0]]
        scale = float(numpy_helper.to_array(index.initializers[q.input[1]]))
        codes = np.clip(np.rint(bound.astype(np.float64) / scale) + int(numpy_helper.to_array(zero)), 0, 255)
        codes_name = unique_name(f"{node.input[1]}_u8", taken)
        model.graph.initializer.append(numpy_helper.from_array(codes.astype(np.uint8), codes_name))
        quantized = unique_name(f"{node.input[0]}_quantized", taken)
        q.input[0], q.output[0], node.output[0] = node.input[0], quantized, q.output[0]
        node.input[0], node.input[1] = quantized, codes_name
    if moved:
        nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in model.graph.node]
        later = set(moved.values())
        del model.graph.node[:]
        for i, node in enumerate(nodes):
            if i not in later:
                model.graph.node.extend([nodes[moved[i]], node] if i in moved else [node])
    return len(moved)


def _symmetric_activation(node: onnx.NodeProto, index: GraphIndex) -> list[onnx.NodeProto] | None:
    """The DequantizeLinear readers of a QuantizeLinear with a scalar INT8 zero point 0, else None."""
    if node.op_type != "QuantizeLinear" or len(node.input) < 3:
        return None
    zero = index.initializers.get(node.input[2])
    if zero is None or zero.data_type != TensorProto.INT8:
        return None
    value = numpy_helper.to_array(zero)
    if value.size != 1 or int(value.reshape(-1)[0]) != 0:
        return None
    readers = [c for c, _ in index.consumers.get(node.output[0], [])]
    if not readers or any(c.op_type != "DequantizeLinear" for c in readers):
        return None
    return readers


def _unsigned_range(scale: float, bounds: tuple[float, float] | None, observed: tuple[float, float] | None,
                    everywhere: bool) -> tuple[float, int] | None:
    """(scale, zero point) of the UINT8 pair replacing a symmetric one of `scale` (module docstring)."""
    if observed is not None:
        low, high = max(observed[0], -QMAX * scale), min(observed[1], QMAX * scale)
        if bounds is not None:
            low, high = 0.0, min(high, bounds[1])
        low, high = min(low, 0.0), max(high, 0.0)
        if high - low > 0.0:
            step = (high - low) / 255.0
            return step, int(np.clip(round(-low / step), 0, 255))
    if bounds is not None:
        return min(scale * QMAX / 255.0, bounds[1] / 255.0), 0
    return (scale, MIDPOINT) if everywhere else None


def unsigned_activations(model: onnx.ModelProto, *, everywhere: bool = True,
                         observed: Mapping[str, tuple[float, float]] | None = None) -> tuple[onnx.ModelProto, int]:
    """Copy of `model` with its activation Q/DQ pairs in UINT8 (module docstring) and how many changed.
    everywhere=False turns only the pairs after Relu / Clip(min >= 0) (the earlier, partial lowering);
    `observed`: tensor -> (min, max) the INT8 pass saw, for asymmetric ranges."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    index = index_graph(model, infer_types=False)
    taken = all_names(model)
    added: list[onnx.TensorProto] = []
    observed = observed or {}
    changed = 0
    for node in model.graph.node:
        readers = _symmetric_activation(node, index)
        scale = scalar_value(model, node.input[1]) if readers is not None else None
        if readers is None or scale is None:
            continue
        bounds = _non_negative(model, index, index.producer.get(node.input[0]))
        chosen = _unsigned_range(scale, bounds, _observed(node, index, observed), everywhere)
        if chosen is None:
            continue
        new_scale, zero = chosen
        # One uint8 scale per dtype: in an --int8-float fp16 graph the graph input's Q keeps a float32 scale
        # while its DequantizeLinear has a float16 one (DQ's scale type is its output type).
        zero_name = unique_name(f"{node.input[2]}_u8", taken)
        added.append(numpy_helper.from_array(np.array(zero, np.uint8), zero_name))
        scale_names: dict[int, str] = {}
        for q_or_dq in (node, *readers):
            original = index.initializers.get(q_or_dq.input[1])
            dtype = original.data_type if original is not None else TensorProto.FLOAT
            if dtype not in scale_names:
                scale_names[dtype] = unique_name(f"{q_or_dq.input[1]}_u8", taken)
                numpy_type = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
                added.append(numpy_helper.from_array(np.array(new_scale, numpy_type), scale_names[dtype]))
            q_or_dq.input[1], q_or_dq.input[2] = scale_names[dtype], zero_name
        changed += 1
    model.graph.initializer.extend(added)
    return model, changed


def _observed(node: onnx.NodeProto, index: GraphIndex, observed: Mapping[str, tuple[float, float]]
              ) -> tuple[float, float] | None:
    """The observed range of a QuantizeLinear's input; for a MaxPool of a dequantized tensor, that tensor's
    (its Q/DQ must match the pool's input for ONNX Runtime to run the pool on UINT8)."""
    tensor = node.input[0]
    producer = index.producer.get(tensor)
    while producer is not None and producer.op_type in ("MaxPool", "DequantizeLinear", "QuantizeLinear"):
        tensor = producer.input[0]
        producer = index.producer.get(tensor)
    return observed.get(tensor)


def quantized_adds(model: onnx.ModelProto) -> int:
    """Route the float readers of an Add on dequantized inputs through the QuantizeLinear that already reads
    its output (a DequantizeLinear is added), in place, so ORT fuses it into QLinearAdd: its QDQ selector
    needs the output read by Q nodes only. MobileNetV2's residual Adds (ResNet's, behind their Relu) feed the
    next block's conv (quantized) and the next residual Add (float). The residual stream is then rounded to
    the next conv's input grid once per block, as in ORT's own recipe (full-width MobileNetV2 DeepLabv3+,
    random weights: pixel agreement 0.977 against 0.978 without, about 3% faster). How many Adds changed."""
    index = index_graph(model, infer_types=False)
    taken = all_names(model)
    added: list[onnx.NodeProto] = []
    changed = 0
    dequantized_here: set[str] = set()  # outputs of the DequantizeLinear nodes added so far (not in the index)
    for node in model.graph.node:
        producers = [index.producer.get(name) for name in node.input if name not in dequantized_here]
        if node.op_type != "Add" or any(p is None or p.op_type != "DequantizeLinear" for p in producers):
            continue
        output = node.output[0]
        readers = index.consumers.get(output, [])
        if len(readers) == 1 and clip_bounds(model, readers[0][0]) is not None:  # ResNet: Add -> Relu -> ...
            output = readers[0][0].output[0]  # ORT folds the Relu into a UINT8 zero point 0 Q after it
            readers = index.consumers.get(output, [])
        quantizers = [c for c, _ in readers if c.op_type == "QuantizeLinear" and _symmetric_or_unsigned(c, index)]
        others = [(c, i) for c, i in readers if c.op_type != "QuantizeLinear"]
        if not quantizers or not others or output in {o.name for o in model.graph.output}:
            continue
        q = quantizers[0]
        dequantized = unique_name(f"{output}_dequantized", taken)
        added.append(onnx.helper.make_node("DequantizeLinear", [q.output[0], q.input[1], q.input[2]], [dequantized],
                                           name=unique_name(f"{output}_DequantizeLinear", taken)))
        for reader, position in others:
            reader.input[position] = dequantized
        dequantized_here.add(dequantized)
        changed += 1
    if added:
        _insert_after_producers(model, added)
    return changed


def _symmetric_or_unsigned(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """A per-tensor activation QuantizeLinear (scalar scale and zero point initializers)."""
    scale, zero = index.initializers.get(node.input[1]), index.initializers.get(node.input[2]) if len(
        node.input) > 2 else None
    return scale is not None and zero is not None and not scale.dims and not zero.dims


def _insert_after_producers(model: onnx.ModelProto, new: list[onnx.NodeProto]) -> None:
    """Insert each new node right after the node producing its first input (keeps the graph sorted)."""
    after = {n.input[0]: n for n in new}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        nodes.append(node)
        nodes.extend(after[o] for o in node.output if o in after)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def quantized_resizes(model: onnx.ModelProto) -> int:
    """Give a Resize of a dequantized tensor a Q/DQ pair on its output with its input's scale and zero point,
    in place, so ORT runs it on UINT8 (its QDQ drop rule needs equal parameters) and the Concat after it
    becomes QLinearConcat, as in ORT's own recipe. The resized values are rounded to the input's grid (at most
    half a step); TensorRT's graph keeps the Resize float. How many Resizes changed."""
    index = index_graph(model, infer_types=False)
    taken = all_names(model)
    outputs = {o.name for o in model.graph.output}
    added: list[onnx.NodeProto] = []
    for node in model.graph.node:
        source = index.producer.get(node.input[0]) if node.op_type == "Resize" else None
        if source is None or source.op_type != "DequantizeLinear" or node.output[0] in outputs:
            continue
        zero = index.initializers.get(source.input[2]) if len(source.input) > 2 else None
        readers = index.consumers.get(node.output[0], [])
        if zero is None or zero.data_type != TensorProto.UINT8 or not readers or any(
                c.op_type in ("QuantizeLinear", "DequantizeLinear") for c, _ in readers):
            continue
        quantized = unique_name(f"{node.output[0]}_quantized", taken)
        dequantized = unique_name(f"{node.output[0]}_dequantized", taken)
        added += [onnx.helper.make_node("QuantizeLinear", [node.output[0], source.input[1], source.input[2]],
                                        [quantized], name=unique_name(f"{node.output[0]}_QuantizeLinear", taken)),
                  onnx.helper.make_node("DequantizeLinear", [quantized, source.input[1], source.input[2]],
                                        [dequantized], name=unique_name(f"{node.output[0]}_DequantizeLinear", taken))]
        for reader, position in readers:
            reader.input[position] = dequantized
    _insert_after_producers(model, [n for n in added if n.op_type == "QuantizeLinear"])
    _insert_after_producers(model, [n for n in added if n.op_type == "DequantizeLinear"])
    return len(added) // 2
