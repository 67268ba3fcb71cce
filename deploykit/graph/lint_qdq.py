"""The Q/DQ rules of `deploykit lint` (QuantizeLinear, DequantizeLinear): the types, granularities and shapes
TensorRT's ONNX parser (onnx-tensorrt QuantDequantLinearHelper) and its IQuantizeLayer/IDequantizeLayer (NvInfer.h)
accept, as Findings; the shape rules themselves are in deploykit.graph.qdq_shapes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from deploykit.graph.lint_nodes import Context, Finding, Rule, finding, node_attrs
from deploykit.graph.qdq_shapes import qdq_shape_problems

# What TensorRT quantizes to (IQuantizeLayer/IDequantizeLayer in NvInfer.h): INT8, FP8, INT4, FP4.
_QUANTIZED = (TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1)
_HALF_SCALES = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
# What IQuantizeLayer takes: "The input type, if constrained, must be constrained to DataType::kFLOAT, DataType::kHALF,
# or DataType::kBF16" (DOUBLE imports as FLOAT: onnx-tensorrt convertDtype).
_QUANTIZABLE = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)


def _onnx_type(values: np.ndarray) -> int | None:
    try:
        return int(helper.np_dtype_to_tensor_dtype(values.dtype))
    except (KeyError, TypeError, ValueError):
        return None


def _qdq_rule(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """onnx-tensorrt onnxOpImporters.cpp QuantDequantLinearHelper (10.12+): DequantizeLinear of UINT8 data is refused
    (checkNotInvalidType(inputs.at(0), {"UINT8"})), as are nonzero zero points and a constant scale that is not all
    positive ("Scale coefficients must all be positive", kINVALID_NODE). A QuantizeLinear whose zero point is not
    INT8/FP8/INT4/FP4 (UINT8, the ONNX default, or INT16, UINT16 ...) parses with a warning and quantizes to INT8
    ("Defaulting to INT8 instead", "TensorRT will use INT8 instead"; 10.1-GA l.1450-1461 alike).
    Types: _qdq_types."""
    found = []
    uint8_fix = "quantize with deploykit's calibration (`build-engine --int8`: symmetric INT8 Q/DQ)"
    zero = ctx.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    data = ctx.constant(node.input[0])
    zero_type = None if zero is None else ctx.index.types.get(node.input[2]) or _onnx_type(zero)
    as_int8 = node.op_type == "QuantizeLinear" and "output_dtype" not in node_attrs(node) and (
        zero is None or zero_type not in _QUANTIZED)
    # A QuantizeLinear's output is INT8 in TensorRT's network whatever ONNX declares; any other UINT8 data is refused.
    uint8_data = (data is not None and data.dtype == np.uint8) or (
        ctx.index.types.get(node.input[0]) == TensorProto.UINT8 and ctx.producer_op(node.input[0]) != "QuantizeLinear")
    if node.op_type == "DequantizeLinear" and uint8_data:
        found.append(finding(node, "qdq-uint8", "error",
                              "DequantizeLinear of UINT8 data (ONNX Runtime's QUInt8): TensorRT's parser refuses it",
                              uint8_fix))
    elif zero is not None and np.any(zero != 0):
        found.append(finding(node, "qdq-zero-point", "error",
                              "asymmetric quantization (nonzero zero point): TensorRT requires zero points of 0",
                              "recalibrate with deploykit (`build-engine --int8`), which writes symmetric Q/DQ"))
    elif as_int8:
        kind = TensorProto.DataType.Name(zero_type) if zero_type else "UINT8"
        found.append(finding(node, "qdq-uint8", "warning",
                              f"{kind} quantization: TensorRT quantizes to INT8 instead, so it keeps negatives and "
                              f"saturates at 127 where ONNX Runtime uses {kind}'s range", uint8_fix))
    scale = ctx.constant(node.input[1]) if len(node.input) > 1 else None
    # NvInfer.h IQuantizeLayer (release/10.16 l.5558): "Activations cannot be quantized per-channel."
    if node.op_type == "QuantizeLinear" and scale is not None and scale.size > 1 and data is None:
        found.append(finding(node, "qdq-activation-per-channel", "error",
                              f"per-channel quantization ({scale.size} scales) of an activation: TensorRT quantizes "
                              "per channel only weights", "quantize activations per tensor (one scale); "
                              "deploykit's `build-engine --int8` does"))
    found += _qdq_granularity(node, ctx, scale, zero_type) + _q_output_dtype(node, zero_type, len(node.input) > 2)
    if scale is not None and scale.dtype.kind == "f" and not np.all(scale > 0):
        found.append(finding(node, "qdq-scale", "error",
                              "a scale that is zero or negative: TensorRT's parser needs all scales positive",
                              "recalibrate with deploykit (`build-engine --int8`), which floors every scale"))
    axis = int(node_attrs(node).get("axis", 1))
    found += _scale_count(node, ctx, data, scale, axis) + _qdq_shapes(node, ctx, scale, zero)
    weights_of = {c.op_type for c, pos in ctx.index.consumers.get(node.output[0], [])
                  if c.op_type in ("Conv", "ConvTranspose") and pos == 1}
    if node.op_type == "DequantizeLinear" and weights_of and scale is not None and scale.size > 1 and axis != 0:
        what = ("convolution weights per output channel (axis 0)" if "Conv" in weights_of else
                "ConvTranspose weights per input channel (axis 0 of (C_in, C_out/groups, kH, kW)); axis 1 is "
                "unsupported (NVIDIA/TensorRT#2380, wrong results in #1694)")
        found.append(finding(node, "qdq-weight-axis", "error",
                              f"per-channel weight scales on axis {axis}: TensorRT quantizes {what}",
                              "recalibrate with deploykit (`build-engine --int8`), which quantizes weights on axis 0"))
    return found + _qdq_types(node, ctx)


def _qdq_granularity(node: onnx.NodeProto, ctx: Context, scale: np.ndarray | None,
                     zero_type: int | None) -> list[Finding]:
    """NVIDIA/TensorRT include/NvInfer.h (v10.16 l.5709, v11.1 l.5534), IDequantizeLayer: "Per-channel dequantization
    is supported only for input that is rooted at an IConstantLayer (i.e. weights)" (a constant, or a Quantize of
    one); IQuantizeLayer / IDequantizeLayer (v10.16 l.5567 / l.5719, v11.1 l.5390 / l.5544): "Block quantization is
    supported for input types DataType::kFP4, DataType::kFP8 and DataType::kINT4", so not INT8 (what a Q/DQ without
    an FP8/INT4/FP4 zero point or output_dtype quantizes to: QuantDequantLinearHelper's chosenDataType)."""
    if scale is None or scale.size < 2:
        return []
    data = node.input[0]
    source = ctx.index.producer.get(data)
    rooted = ctx.constant(data) is not None or (
        source is not None and source.op_type == "QuantizeLinear" and ctx.constant(source.input[0]) is not None)
    if node.op_type == "DequantizeLinear" and scale.ndim <= 1 and not rooted:
        return [finding(node, "qdq-activation-per-channel", "error",
                        f"per-channel dequantization ({scale.size} scales) of an activation: TensorRT dequantizes "
                        "per channel only weights (constants)", "quantize activations per tensor (one scale); "
                        "deploykit's `build-engine --int8` does")]
    declared = zero_type if zero_type is not None else node_attrs(node).get("output_dtype")
    if node.op_type == "DequantizeLinear" and zero_type is None:
        declared = ctx.index.types.get(data)
    if scale.ndim < 2 or declared in (TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1):
        return []
    return [finding(node, "qdq-block-int8", "error",
                    f"block quantization (scale of shape {list(scale.shape)}) to INT8: TensorRT block-quantizes only "
                    "to INT4, FP8 or FP4", "quantize INT8 per tensor or per channel (a 1-D scale), or block-"
                    "quantize to INT4/FP8")]


def _qdq_shapes(node: onnx.NodeProto, ctx: Context, scale: np.ndarray | None,
                zero: np.ndarray | None) -> list[Finding]:
    """Scale, zero point and data shapes (deploykit.graph.qdq_shapes). The type QuantDequantLinearHelper quantizes
    to (its chosenDataType): a zero point's if INT8/FP8/INT4/FP4 (else INT8), else a QuantizeLinear's output_dtype,
    else INT8 -- so a DequantizeLinear without a zero point skips the 4-bit count check, and an FP8 one the zero
    point's size check."""
    attrs = node_attrs(node)
    has_zero = len(node.input) > 2 and bool(node.input[2])
    chosen = ctx.index.types.get(node.input[2]) if has_zero else (
        attrs.get("output_dtype") if node.op_type == "QuantizeLinear" else None)
    chosen = chosen if chosen in _QUANTIZED else TensorProto.INT8
    values = ctx.constant(node.input[0])
    data = values.shape if values is not None else ctx.index.shapes.get(node.input[0])
    zero_size = zero.size if zero is not None and chosen != TensorProto.FLOAT8E4M3FN else None
    block = (int(attrs.get("axis", 1)), int(attrs["block_size"])) if attrs.get("block_size") else None
    scale_shape = scale.shape if scale is not None else ctx.index.shapes.get(node.input[1])  # a computed scale's too
    problems = qdq_shape_problems(data, scale_shape if scale_shape and min(scale_shape) >= 0 else None, zero_size,
                                  chosen in (TensorProto.INT4, TensorProto.FLOAT4E2M1), block)
    return [finding(node, p.rule, p.severity, p.why, p.fix) for p in problems]


def _q_output_dtype(node: onnx.NodeProto, zero_type: int | None, has_zero: bool) -> list[Finding]:
    """QuantDequantLinearHelper (10.1-GA l.1446-1449 and l.1514-1517; 10.12+ alike, checkQuantizationDatatype): a
    QuantizeLinear's output_dtype must equal its zero point's type ("Mismatch between attribute output_dtype and
    zero-point data type") and, without a zero point, be INT8, FP8, INT4 or FP4 (UINT8, INT16 ...: kINVALID_NODE /
    kUNSUPPORTED_NODE), unlike a UINT8 zero point, which it quantizes as INT8."""
    declared = node_attrs(node).get("output_dtype", 0)
    if node.op_type != "QuantizeLinear" or not declared:
        return []
    if has_zero and node.input[2] and zero_type is not None and zero_type != declared:
        why = (f"output_dtype {TensorProto.DataType.Name(declared)} differs from the zero point's type "
               f"{TensorProto.DataType.Name(zero_type)}: TensorRT's parser refuses the mismatch")
    elif not (has_zero and node.input[2]) and declared not in _QUANTIZED:
        why = (f"QuantizeLinear to {TensorProto.DataType.Name(declared)} (output_dtype): TensorRT quantizes only to "
               "INT8, FP8, INT4 or FP4")
    else:
        return []
    return [finding(node, "qdq-output-type", "error", why, "quantize to INT8 (`build-engine --int8` does)")]


def _scale_count(node: onnx.NodeProto, ctx: Context, data: np.ndarray | None, scale: np.ndarray | None,
                 axis: int) -> list[Finding]:
    """QuantDequantLinearHelper (10.1-GA l.1533-1540, 10.12+ alike): "The number of scales is not equal to the number
    of output channels" (kINVALID_NODE) when a 1-D scale's length is not the size of the axis of constant data; the
    axis defaults to 0 below opset 13, when ONNX had no axis (the 10.12+ helper's "Use a default of 0")."""
    opset = next((e.version for e in ctx.model.opset_import if e.domain in ("", "ai.onnx")), 0)
    channel_axis = axis if opset >= 13 or "axis" in node_attrs(node) else 0
    if data is None or scale is None or scale.ndim != 1 or scale.size < 2 \
            or not -data.ndim <= channel_axis < data.ndim or data.shape[channel_axis] == scale.size:
        return []
    return [finding(node, "qdq-scale-count", "error",
                    f"{scale.size} scales for the {data.shape[channel_axis]} channels of axis {channel_axis}: TensorRT "
                    "needs one scale per channel of the quantization axis", "recalibrate with deploykit "
                    "(`build-engine --int8`), which writes one scale per output channel")]


def _qdq_types(node: onnx.NodeProto, ctx: Context) -> list[Finding]:
    """Types TensorRT's Q/DQ layers take, in the strongly typed network deploykit builds (10.x and 11.x).
    DequantizeLinear: NVIDIA/TensorRT include/NvInfer.h IDequantizeLayer (v10.16 l.5691-5692, v11.1 l.5516-5517):
    "input type ... must be constrained to DataType::kINT8, DataType::kFP8, DataType::kINT4 or DataType::kFP4" (an
    INT32 bias included; a QuantizeLinear's output always is one of them). QuantizeLinear: IQuantizeLayer takes FLOAT,
    HALF or BF16 input, not ONNX's INT32 (v10.16 l.5539-5540, v11.1 l.5362-5363), and (v10.16
    l.5544-5545, v11.1 l.5367-5368): "For strongly typed networks, if the scale data type is DataType::kHALF or
    DataType::kBF16, it must match the input data type"; the parser casts the scale to the input's type only below
    opset 19 (onnxOpImporters.cpp QuantDequantLinearHelper, 10.12+: `if (ctx->getOpsetVersion() < 19 &&
    scaleInput->getType() != inputType)` -> addCast)."""
    source = ctx.index.types.get(node.input[0])
    if node.op_type == "DequantizeLinear":
        if source in (None, 0, TensorProto.UINT8, *_QUANTIZED) or ctx.producer_op(node.input[0]) == "QuantizeLinear":
            return []  # UINT8: the qdq-uint8 error
        return [finding(node, "qdq-data-type", "error", f"DequantizeLinear of {TensorProto.DataType.Name(source)} "
                         "data: TensorRT dequantizes only INT8, FP8, INT4 or FP4",
                         "keep biases and other non-quantized constants in float")]
    if source not in (None, 0, *_QUANTIZABLE):  # IQuantizeLayer (v10.16 l.5539-5540, v11.1 l.5362-5363)
        return [finding(node, "qdq-data-type", "error", f"QuantizeLinear of {TensorProto.DataType.Name(source)} "
                         "data: TensorRT quantizes only float, float16 or bfloat16 tensors",
                         "quantize the float tensor (cast integer data to float first)")]
    scale_type = ctx.index.types.get(node.input[1]) if len(node.input) > 1 else None
    opset = next((e.version for e in ctx.model.opset_import if e.domain in ("", "ai.onnx")), 0)
    if opset < 19 or scale_type not in _HALF_SCALES or source in (None, 0, scale_type):
        return []
    return [finding(node, "qdq-scale-type", "error",
                     f"QuantizeLinear of {TensorProto.DataType.Name(source)} data with a "
                     f"{TensorProto.DataType.Name(scale_type)} scale: a strongly typed TensorRT network needs a "
                     "float16/bfloat16 scale to match the input's type (opset >= 19: the parser does not cast it)",
                     "give the scale the input's type (or use a float32 scale)")]


QDQ_RULES: dict[str, Rule] = {"QuantizeLinear": _qdq_rule, "DequantizeLinear": _qdq_rule}
