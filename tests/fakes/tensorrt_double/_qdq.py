"""The double's Q/DQ granularity and shape rules (see _parse): what TensorRT's parser and its IQuantizeLayer /
IDequantizeLayer refuse in a Q/DQ's scale, zero point and data, each citing its source."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

# NVIDIA/TensorRT include/NvInfer.h, class IDequantizeLayer (release/10.16 l.5690-5694, main l.5516-5520): "The
# input type, if constrained, must be constrained to DataType::kINT8, DataType::kFP8, DataType::kINT4 or
# DataType::kFP4"; operators.md (10.15): DequantizeLinear "INT8, FP8, FP4, INT4".
DEQUANTIZABLE = {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1}


def granularity_problem(node: onnx.NodeProto, constants: dict[str, np.ndarray], types: dict[str, int],
                        weights: set[str]) -> tuple[str, str] | None:
    """NvInfer.h IDequantizeLayer (v10.16 l.5709, v11.1 l.5534): "Per-channel dequantization is supported only for
    input that is rooted at an IConstantLayer (i.e. weights)"; IQuantizeLayer / IDequantizeLayer (v10.16 l.5567 /
    l.5719, v11.1 l.5390 / l.5544): "Block quantization is supported for input types DataType::kFP4, DataType::kFP8
    and DataType::kINT4" (the type QuantDequantLinearHelper chose: the zero point's if FP8/INT4/FP4, else
    output_dtype's, else INT8; for DequantizeLinear without a zero point, its input's)."""
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.input[1] not in constants:
        return None
    scale = np.asarray(constants[node.input[1]])
    if scale.size < 2:
        return None
    if node.op_type == "DequantizeLinear" and scale.ndim <= 1 and node.input[0] not in weights:
        return "INVALID_NODE", "Per-channel dequantization is supported only for input rooted at an IConstantLayer"
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    chosen = types.get(zero) if zero else next((a.i for a in node.attribute if a.name == "output_dtype"), None)
    if node.op_type == "DequantizeLinear" and not zero:
        chosen = types.get(node.input[0])
    if scale.ndim >= 2 and chosen not in (TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1):
        return "INVALID_NODE", "Block quantization is supported for FP4, FP8 and INT4 only, not INT8"
    return None


def shape_problem(node: onnx.NodeProto, constants: dict[str, np.ndarray], types: dict[str, int],
                  shapes: dict[str, tuple[int, ...]]) -> tuple[str, str] | None:
    """onnx-tensorrt onnxOpImporters.cpp QuantDequantLinearHelper (10.12+), in its order, each kINVALID_NODE; and
    NvInfer.h IQuantizeLayer / IDequantizeLayer (v10.16 l.5526 and l.5534 / l.5678 and l.5686, v11.1 l.5349 and
    l.5357 / l.5503 and l.5511): "scale and zeroPt should have identical dimensions, and rank lower or equal to 2",
    block scales "must match the shape of the input, except for the blocking dimension (the last or second to last
    dimension)". The parser never reads ONNX's block_size: it infers the block from the two shapes."""
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 2:
        return None
    scale = constants[node.input[1]].shape if node.input[1] in constants else shapes.get(node.input[1])
    data = constants[node.input[0]].shape if node.input[0] in constants else shapes.get(node.input[0])
    if node.input[1] in constants and constants[node.input[1]].size == 0:
        return "INVALID_NODE", "Cannot have scale with no coefficients."
    zero = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    chosen = types.get(zero) if zero else (next((a.i for a in node.attribute if a.name == "output_dtype"), None)
                                           if node.op_type == "QuantizeLinear" else None)
    chosen = chosen if chosen in DEQUANTIZABLE else TensorProto.INT8
    static = scale is not None and -1 not in scale
    if zero in constants and chosen != TensorProto.FLOAT8E4M3FN and static \
            and constants[zero].size != int(np.prod(scale)):
        return "INVALID_NODE", "The scale and zero point must have the same volume."
    if data is not None and static and int(np.prod(scale)) != 1 and len(scale) != 1:
        if len(scale) != len(data):
            return "INVALID_NODE", f"Invalid rank for the scale tensor. Rank = {len(scale)}."
        if -1 not in data:
            if sum(d // s == 1 for d, s in zip(data, scale, strict=True)) != len(data) - 1:
                return "INVALID_NODE", "Only a single blocking dimension is allowed."
            if int(np.prod(data)) % int(np.prod(scale)):
                return "INVALID_NODE", "Inferred block size is not an integer."
        if len(scale) > 2:  # NvInfer.h: rank <= 2
            return "INVALID_NODE", "Block quantization: the scale's rank must be at most 2"
        if sum(d != s for d, s in zip(data, scale, strict=True) if d >= 0) > 1 \
                or any(d != s for d, s in zip(data[:-2], scale[:-2], strict=True)):  # NvInfer.h: one, of the last 2
            return "INVALID_NODE", "Block quantization: the scale must match the input but in the last 2 dimensions"
    if data is not None and -1 not in data and chosen in (TensorProto.INT4, TensorProto.FLOAT4E2M1) \
            and int(np.prod(data)) % 2:
        return "INVALID_NODE", "4-bit quantization requies an even number of elements."
    return None
