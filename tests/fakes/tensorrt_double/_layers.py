"""The double's checks of what TensorRT's layers (not the parser's table) refuse, with the source of each; written
independently of deploykit's lint, as _parse is. `layer_problem` returns (ErrorCode name, description) or None.

Sources: onnx/onnx-tensorrt at release/10.1-GA (commit 96e7811) onnxOpImporters.cpp and importerUtils.cpp, each
line checked unchanged in a 10.x importer with MXFP8 support (10.12+); NVIDIA/TensorRT include/NvInfer.h and
NvInferRuntimeBase.h at v10.16 (52399f5) and v11.1 (82d1dca).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

# NvInferRuntimeBase.h DataType::kUINT8 (v10.16 l.164-167, v11.1 l.167-170): UINT8 network inputs are converted
# "to {kFLOAT, kHALF} prior to use with other TensorRT layers" and outputs converted to it last; operators.md
# (10.1-GA l.13): "UINT8 is only supported as network input or output tensor types". Cast (ICastLayer) is the
# conversion; DequantizeLinear of UINT8 has its own message in _parse; a Q/DQ zero point (input 2) is weights.
UINT8_READERS = {"Cast", "DequantizeLinear"}
# NvInfer.h IQuantizeLayer (v10.16 l.5544-5545, v11.1 l.5367-5368): "For strongly typed networks, if the scale data
# type is DataType::kHALF or DataType::kBF16, it must match the input data type"; QuantDequantLinearHelper casts the
# scale to the input type only `if (ctx->getOpsetVersion() < 19 && scaleInput->getType() != inputType)`.
HALF_SCALES = {TensorProto.FLOAT16, TensorProto.BFLOAT16}
# IQuantizeLayer (NvInfer.h v10.16 l.5538-5539, v11.1 l.5361-5362): "The output type, if constrained, must be
# constrained to DataType::kINT8, DataType::kFP8, DataType::kINT4 or DataType::kFP4".
QUANTIZED = {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1}
# NvInfer.h ITopKLayer::setK and addTopK (v10.16 l.3659, l.8458; v11.1 l.3448, l.8595): "Currently only values of K
# up to 3840 are supported."
TOPK_MAX_K = 3840


def layer_problem(node: onnx.NodeProto, constants: dict[str, np.ndarray], types: dict[str, int],
                  ranks: dict[str, int], opset: int) -> tuple[str, str] | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    inputs = list(node.input)
    for position, name in enumerate(inputs):
        if types.get(name) == TensorProto.UINT8 and node.op_type not in UINT8_READERS and not (
                position == 2 and node.op_type == "QuantizeLinear"):
            return "UNSUPPORTED_NODE", (f"{node.op_type}: UINT8 tensor {name} inside the network (TensorRT takes "
                                        "UINT8 only as network input or output, through a Cast)")
    if node.op_type == "GridSample":
        # onnxOpImporters.cpp 10.1-GA l.5098: ONNXTRT_CHECK_NODE(gridRank == inputRank, ..., kINVALID_NODE); NvInfer.h
        # IGridSampleLayer (v10.16 l.6239, v11.1 l.6075): "The input and grid tensors must be shape tensors of rank 4".
        shape = [ranks.get(name) for name in inputs[:2]]
        if any(rank is not None and rank != 4 for rank in shape):
            return "INVALID_NODE", f"GridSample: input rank {shape[0]}, grid rank {shape[1]}; IGridSampleLayer needs 4"
        if {types.get(name) for name in inputs[:2]} & {TensorProto.BOOL}:  # l.5087-5088 (UINT8: above)
            return "UNSUPPORTED_NODE_DATATYPE", "GridSample of BOOL data"
    if node.op_type == "QuantizeLinear" and opset >= 19 and len(inputs) > 1:
        scale, data = types.get(inputs[1]), types.get(inputs[0])
        if scale in HALF_SCALES and data and data != scale:
            return "INVALID_NODE", "IQuantizeLayer: a HALF/BF16 scale must match the input type (strongly typed)"
    # 10.1-GA l.3583-3589 (10.12+ alike), Mod: fmod=0 takes INT32/INT64 only ("The fmod attribute is set to 0. Inputs
    # cannot be of floating point types", kUNSUPPORTED_NODE_DATATYPE).
    source = types.get(inputs[0]) if node.op_type == "Mod" else None
    if source and attrs.get("fmod", 0) == 0 and source not in (TensorProto.INT32, TensorProto.INT64):
        return "UNSUPPORTED_NODE_DATATYPE", "The fmod attribute is set to 0. Inputs cannot be of floating point types."
    # QuantDequantLinearHelper (10.1-GA l.1446-1449, l.1514-1517; 10.12+ checkQuantizationDatatype): output_dtype
    # equals the zero point's type, and without one is INT8/FP8/INT4/FP4.
    declared = attrs.get("output_dtype", 0) if node.op_type == "QuantizeLinear" else 0
    zero = inputs[2] if len(inputs) > 2 and inputs[2] else ""
    if declared and zero and types.get(zero) not in (None, declared):
        return "INVALID_NODE", "Mismatch between attribute output_dtype and zero-point data type."
    if declared and not zero and declared not in QUANTIZED:
        return "INVALID_NODE", "TensorRT only allows FP8, INT8, INT4, and FP4 quantization."
    # onnxOpImporters.cpp 10.1-GA l.4612-4622, importerUtils.cpp canUseNDResize l.265-279: constant scales other than 1
    # only on the last 3 axes (linear) or 2 (cubic).
    position = 2 if opset >= 11 else 1
    scales = constants.get(inputs[position]) if node.op_type == "Resize" and len(inputs) > position \
        and "axes" not in attrs else None
    kept = {b"linear": 3, b"cubic": 2}.get(attrs.get("mode", b"nearest"), 0)
    if scales is not None and kept and scales.ndim == 1 and np.any(scales[:max(scales.size - kept, 0)] != 1):
        return "UNSUPPORTED_NODE", f"This version of TensorRT only supports {kept}-D resizing of this mode."
    return _attribute_problem(node, attrs, constants)


def _attribute_problem(node: onnx.NodeProto, attrs: dict[str, object],
                       constants: dict[str, np.ndarray]) -> tuple[str, str] | None:
    inputs = list(node.input)
    k = constants.get(inputs[1]) if node.op_type == "TopK" and len(inputs) > 1 else None
    if k is not None and k.size == 1 and int(k.reshape(-1)[0]) > TOPK_MAX_K:
        return "UNSUPPORTED_NODE", f"TopK: K={int(k.reshape(-1)[0])}; only values of K up to {TOPK_MAX_K} are supported"
    # 10.12+ DEFINE_BUILTIN_OP_IMPORTER(ScatterND): ONNXTRT_CHECK_NODE(mode == "none", "ScatterND with reduction is not
    # supported.", ..., kUNSUPPORTED_NODE_ATTR) (10.1-GA l.5151 refused any reduction attribute, "none" too).
    # importerUtils.cpp 10.1-GA poolingHelper l.1387-1401: a 3-D input (kernel_shape of 1) is pooled as 2-D, 2-D/3-D
    # as they are, else "The attribute kernel_shape misaligns ..." (kUNSUPPORTED_NODE); LpPool (onnxOpImporters.cpp
    # l.3329-3382) has no such expansion and IPoolingLayer pools 2-D or 3-D.
    kernel = len(attrs.get("kernel_shape", [0, 0])) if node.op_type in ("MaxPool", "AveragePool", "LpPool") else 2
    if kernel not in ((2, 3) if node.op_type == "LpPool" else (1, 2, 3)):
        return "UNSUPPORTED_NODE", "The attribute kernel_shape misaligns with the shape of the input tensor."
    # importerUtils.cpp 10.1-GA reduceTensor l.1471-1474 ("Axis input must be an initializer!") and Pad l.3851-3870.
    axes = 3 if node.op_type == "Pad" else 1 if node.op_type.startswith("Reduce") else 0
    if axes and len(inputs) > axes and inputs[axes] and inputs[axes] not in constants:
        return "UNSUPPORTED_NODE", f"{node.op_type}: axes input must be an initializer"
    if node.op_type == "ScatterND" and attrs.get("reduction", b"none") != b"none":
        return "UNSUPPORTED_NODE_ATTR", "ScatterND with reduction is not supported."
    # 10.1-GA l.2752-2815: the importer returns Y only (operators.md l.100: "Only the first output `Y` is supported").
    if node.op_type == "LayerNormalization" and any(node.output[1:]):
        return "UNSUPPORTED_NODE", "LayerNormalization: only the first output Y is supported"
    # 10.1-GA l.1137: assertIsWeights(inputs.at(1), "Axis input for CumSum must be an initializer!").
    if node.op_type == "CumSum" and inputs[1] not in constants:
        return "UNSUPPORTED_NODE", "Axis input for CumSum must be an initializer!"
    # 10.1-GA l.1706-1714: training_mode must be an initializer and False.
    if node.op_type == "Dropout" and len(inputs) > 2 and inputs[2]:
        mode = constants.get(inputs[2])
        if mode is None or bool(np.asarray(mode).reshape(-1)[0]):
            return "UNSUPPORTED_NODE", "TensorRT does not support the Dropout operator in training mode."
    return None
