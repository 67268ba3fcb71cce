"""TensorRT's ONNX support, as onnx-tensorrt's docs/operators.md states it for TensorRT 10.15 (opsets 9-24).

Data only; deploykit/graph/lint.py applies it. Update both tables together when a TensorRT release
changes operators.md.
"""

from __future__ import annotations

from onnx import TensorProto

OPSET_RANGE = (9, 24)

SUPPORTED = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "Attention",
    "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten",
    "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU", "HammingWindow",
    "HannWindow", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization",
    "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LRN",
    "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min",
    "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus",
    "Pow", "PRelu", "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
    "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
    "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence",
    "RMSNormalization", "RNN", "RoiAlign", "RotaryEmbedding", "Round", "STFT", "ScaledTanh", "Scan", "Scatter",
    "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice",
    "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh",
    "TensorScatter", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where",
    "Xor"
})

UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im",
    "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear",
    "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv",
    "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat",
    "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique"
})

UNPOOLING_OPS = frozenset({"MaxUnpool"})  # reported by the unpooling rule (deploykit.graph.unpool)

# operators.md lists nearest and linear only, but the parser imports "cubic" as InterpolationMode::kCUBIC
# (onnx-tensorrt onnxOpImporters.cpp, DEFINE_BUILTIN_OP_IMPORTER(Resize): `if (mode == "cubic")`; NvInfer.h
# release/10.16 l.4102: "kCUBIC = 2 //!< Supports bicubic (2D) interpolation").
RESIZE_MODES = ("nearest", "linear", "cubic")
RESIZE_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
RESIZE_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
TOPK_MAX_K = 3840

TENSOR_TYPES = frozenset({
    TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE, TensorProto.INT32,
    TensorProto.INT64, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL, TensorProto.FLOAT8E4M3FN,
    TensorProto.INT4, TensorProto.FLOAT4E2M1,
})

REPLACE_FIX = "replace the layer in the PyTorch model with supported operators and re-export"
PLUGIN_FIX = "replace the layer in PyTorch with standard operators, or provide a TensorRT plugin for it"
QOPERATOR_FIX = ("this is ONNX Runtime's QOperator INT8 format; build INT8 with deploykit instead "
                 "(`build-engine --int8`: Q/DQ nodes, which TensorRT reads)")

UNSUPPORTED_FIXES = {
    "QLinearConv": QOPERATOR_FIX,
    "QLinearMatMul": QOPERATOR_FIX,
    "ConvInteger": QOPERATOR_FIX,
    "MatMulInteger": QOPERATOR_FIX,
    "DynamicQuantizeLinear": "use static INT8 from calibration (`build-engine --int8`), not dynamic quantization",
    "MaxRoiPool": "use RoiAlign (supported) in the PyTorch model",
    "Unique": "do the unique step in Python after the engine",
    "SoftmaxCrossEntropyLoss": "export the model without its loss (eval mode, logits out)",
    "NegativeLogLikelihoodLoss": "export the model without its loss (eval mode, logits out)",
}
for _op in ("SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
            "SequenceLength", "SequenceMap", "SplitToSequence", "ConcatFromSequence"):
    UNSUPPORTED_FIXES[_op] = "return tensors or tuples of tensors from forward, not Python lists built in a loop"

CUSTOM_DOMAIN_FIXES = {
    "com.microsoft": ("ONNX Runtime contrib operator (from ORT graph optimization or its quantizer): lint and build "
                      "the ONNX that `deploykit export` wrote, not an ONNX Runtime-optimized model"),
}
