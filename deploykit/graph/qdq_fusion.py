"""Q/DQ placements TensorRT will not fuse: run by `deploykit lint --target tensorrt` on graphs with Q/DQ nodes
and by `build-engine --int8 --backend tensorrt` on the INT8 graph it writes.

TensorRT builds a Q/DQ network by fusing each DequantizeLinear forward into the op that reads it and each
QuantizeLinear backward into the op that writes it; what cannot fuse runs as its own (de)quantize kernel in
float around it, which is how explicit-Q/DQ engines end up slower than FP16 (NVIDIA/TensorRT#4366, #3197;
Model-Optimizer#60, #80, #207). The rules, from TensorRT's developer guide ("Working with Quantized Types",
explicit quantization: Q/DQ fusion and the layer-placement recommendations) and the issues named:
- qdq-unfused-dq (warning): an activation DequantizeLinear read by an op that is neither quantizable in INT8
  (convolution, deconvolution, GEMM/MatMul, pooling, the residual Add fused into a convolution) nor one that
  Q/DQ commutes through (Concat, Slice, Split, Reshape, Transpose, Flatten, (Un)Squeeze, MaxPool, Pad,
  Identity). That reader runs in float behind a standalone dequantize; quantizing its input only adds error.
- int8-resize (info, in deploykit.graph.lint): a Resize reading a DequantizeLinear: TensorRT has no INT8
  Resize and rescales its input to float (NVIDIA/TensorRT#2976).
- qdq-concat-scales (warning): a Concat whose quantized inputs (or its quantized output) carry different
  scales: TensorRT requantizes each input before concatenating instead of copying INT8 data.
- qdq-residual-add (info): an Add that reads one input straight from a quantized convolution while its other
  (skip) input is float: TensorRT then cannot fuse the Add into the convolution's epilogue in INT8 ("quantize
  the residual input", the guide's ResNet recommendation).
- int8-grouped-conv (info, in deploykit.graph.lint): depthwise/grouped convolutions in INT8, often slower than
  in FP16 (NVIDIA/TensorRT#4529, #1409).
- int8-fp32-remainder (info): a Q/DQ graph with no float16 at all: a strongly typed TensorRT network runs
  every op outside the quantized ones (low_precision: INT8, or INT4 weights only ...) in FP32, where FP16 is
  faster (ModelOpt's default remainder is FP16).
Each finding names the node, says why, and gives the fix deploykit offers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import onnx

from deploykit.graph.tensors import GraphIndex, constant_value

# Ops TensorRT runs in INT8 when their inputs are dequantized (the guide's quantizable layers).
QUANTIZABLE = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "AveragePool", "GlobalAveragePool", "Add"})
# Ops Q/DQ propagate through unchanged (data movement and max, which commute with symmetric quantization).
COMMUTING = frozenset({"Concat", "Slice", "Split", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                       "MaxPool", "GlobalMaxPool", "Pad", "Identity", "QuantizeLinear"})
FIX_LAYOUT = ("build with `deploykit build-engine --int8 --backend tensorrt` (Q/DQ on the inputs of weighted "
              "ops only: --qdq-layout inputs), or exclude the node's producer with --keep-float")

Finding = tuple[str, Literal["error", "warning", "info"], onnx.NodeProto, str, str]  # rule, severity, node, why, fix



def _activation_scale(index: GraphIndex, node: onnx.NodeProto) -> float | None:
    """The scalar scale of an activation Q or DQ (None for per-channel weights or a computed scale)."""
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
        return None
    if node.op_type == "DequantizeLinear" and node.input[0] in index.initializers:
        return None  # a constant weight
    scale = constant_value(index, node.input[1])
    return float(scale.reshape(-1)[0]) if scale is not None and scale.size == 1 else None


def _unfused_dq(index: GraphIndex, node: onnx.NodeProto) -> list[Finding]:
    if node.op_type != "DequantizeLinear" or _activation_scale(index, node) is None:
        return []
    found: list[Finding] = []
    for reader, _ in index.consumers.get(node.output[0], []):
        if reader.op_type in QUANTIZABLE or reader.op_type in COMMUTING or reader.op_type == "Resize":
            continue  # Resize: the int8-resize rule
        found.append(("qdq-unfused-dq", "warning", reader,
                      f"{reader.op_type} reads the dequantized {node.input[0]!r}, but TensorRT cannot run "
                      f"{reader.op_type} in INT8 nor move the DequantizeLinear past it: it runs as its own kernel "
                      "and the quantization only adds error (TensorRT guide, Q/DQ fusion)", FIX_LAYOUT))
    return found


def _scale_of_input(index: GraphIndex, name: str) -> float | None:
    producer = index.producer.get(name)
    return _activation_scale(index, producer) if producer is not None else None


def _concat_scales(index: GraphIndex, node: onnx.NodeProto) -> list[Finding]:
    if node.op_type != "Concat":
        return []
    scales = [s for s in (_scale_of_input(index, i) for i in node.input) if s is not None]
    after = [_activation_scale(index, c) for c, _ in index.consumers.get(node.output[0], [])
             if c.op_type == "QuantizeLinear"]
    scales += [s for s in after if s is not None]
    if len(scales) < 2 or np.allclose(scales, scales[0], rtol=1e-6, atol=0.0):
        return []
    return [("qdq-concat-scales", "warning", node,
             f"the Concat's quantized inputs/output use {len(set(scales))} different scales "
             f"({min(scales):.4g}..{max(scales):.4g}): TensorRT requantizes each input instead of copying INT8 data",
             "rebuild with deploykit's INT8 pass, which gives a Concat's quantized tensors one scale")]


def _residual_add(index: GraphIndex, node: onnx.NodeProto) -> list[Finding]:
    if node.op_type != "Add" or len(node.input) != 2:
        return []
    producers = [index.producer.get(i) for i in node.input]
    convs = [p for p in producers if p is not None and p.op_type == "Conv" and len(p.input) > 1
             and (w := index.producer.get(p.input[1])) is not None and w.op_type == "DequantizeLinear"]
    dequantized = [p for p in producers if p is not None and p.op_type == "DequantizeLinear"]
    if not convs or dequantized:
        return []
    return [("qdq-residual-add", "info", node,
             f"this Add follows the quantized convolution {convs[0].name!r} but its other input is float: TensorRT "
             "cannot fuse the Add into the convolution's INT8 epilogue (guide: quantize the residual input)",
             "build with `build-engine --int8 --backend tensorrt`, which quantizes residual skip inputs")]


RULES: tuple[Callable[[GraphIndex, onnx.NodeProto], list[Finding]], ...] = (_unfused_dq, _concat_scales,
                                                                              _residual_add)


WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# How reports name a quantized type; TensorRT quantizes UINT8 as INT8 (deploykit.graph.lint_qdq)
_TYPE_NAMES: dict[int, str] = {onnx.TensorProto.INT8: "INT8", onnx.TensorProto.UINT8: "INT8",
                               onnx.TensorProto.INT4: "INT4", onnx.TensorProto.FLOAT8E4M3FN: "FP8",
                               onnx.TensorProto.FLOAT4E2M1: "FP4"}


def _dequantized_from(index: GraphIndex, name: str) -> str | None:
    """The quantized type `name` is dequantized from (its zero point's, else its data's), None when no
    DequantizeLinear produces it."""
    node = index.producer.get(name)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    kind = index.types.get(node.input[2] if len(node.input) > 2 and node.input[2] else node.input[0])
    if not kind:
        return "INT8"  # a type inference could not find: what TensorRT quantizes to by default
    return _TYPE_NAMES.get(kind) or onnx.TensorProto.DataType.Name(kind)


def low_precision(index: GraphIndex, node: onnx.NodeProto) -> str | None:
    """How a weighted op with dequantized weights computes: "INT8" when its data is dequantized from the same type
    (TensorRT fuses the pair into an INT8 kernel), "INT4 weights only" when its data is float (weight-only
    quantization: the weights are dequantized to float and the op computes in float), "INT8 data, INT4
    weights" for a mix; None for an op without dequantized weights."""
    if node.op_type not in WEIGHTED or len(node.input) < 2:
        return None
    data, weights = _dequantized_from(index, node.input[0]), _dequantized_from(index, node.input[1])
    if weights is None:
        return None
    if data is None:
        return f"{weights} weights only"
    return data if data == weights else f"{data} data, {weights} weights"


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _fp32_remainder(model: onnx.ModelProto, index: GraphIndex) -> list[Finding]:
    """One finding for the whole graph when nothing in it is float16 (module docstring)."""
    half = onnx.TensorProto.FLOAT16
    if any(t == half for t in index.types.values()):
        return []
    first = next((n for n in model.graph.node if n.op_type in WEIGHTED), None)
    if first is None:
        return []
    kinds = sorted({kind for n in model.graph.node if (kind := low_precision(index, n))}) or ["no weighted op"]
    return [("int8-fp32-remainder", "info", first,
             f"every op outside the quantized ones ({', '.join(kinds)}) is float32: a strongly typed TensorRT "
             "network runs them in FP32, slower than the FP16 remainder TensorRT's own INT8 recipe uses",
             "build with `--int8-float fp16`, or `--int8-float auto` with an --accuracy-budget")]


def qdq_findings(model: onnx.ModelProto, index: GraphIndex) -> list[Finding]:
    """Every Q/DQ placement in `model`'s main graph that TensorRT will not fuse (module docstring)."""
    found: list[Finding] = []
    for node in model.graph.node:
        for rule in RULES:
            found.extend(rule(index, node))
    return found + _fp32_remainder(model, index)
