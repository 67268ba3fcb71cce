"""Engine-inspector JSON in the layouts TensorRT prints, for the precision audit's tests (our own values, the
real layouts' keys and strings).

10.x: NVIDIA/TensorRT tools/experimental/trt-engine-explorer (TREx, release/10.16), whose example dumps are
`get_engine_information(JSON)` output of real engines:
- examples/pytorch/resnet/A100/qat-residual/resnet-qat-residual.onnx.engine.graph.json: a Q/DQ ResNet whose stem
  is one fused "ConvActPool" layer ("conv1.weight + QuantizeLinear_7 + Conv_9 + MaxPool_12") with prefixed keys
  ConvParameterType, ConvKernel, ConvPrePadding, ConvStride, ConvOutMaps, ConvGroups, ... and Pooling* ones, and
  an output of the pooled size; a "Reformat" layer with "Origin": "QDQ" for the input's QuantizeLinear;
- tests/inputs/mobilenet_v2_residuals.qat.onnx.engine.graph.json: "CaskConvolution", "CudaDepthwiseConvolution"
  (ParameterType Convolution, Groups = channels), "FusedConvActConvolution", "TiledPooling", "NoOp" layers and the
  "Format/Datatype" strings ("Thirty-two wide channel vectorized row major Int8 format", "Two wide channel
  vectorized row major FP16 format", "Row major linear FP32").
- Myelin: a layer of LayerType "Myelin" (a layer type TREx colours: trex/colors.py l.80) named
  "{ForeignNode[...]}", with no convolution fields (the name and type as trtexec layer dumps show them, quoted in
  write-ups of TensorRT 8.6's Myelin fusions; NVIDIA/TensorRT#2577 is about such ForeignNode layers).
11.x: "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x" (docs.nvidia.com, TensorRT 11.0-11.4): "I/O
Tensors" objects (Name, IOMode, DataType "Float", Dimensions, Location, IsShapeInferenceIO, ProfileInfo with
Format "Row major linear FP32 format (kLINEAR)") replace "Bindings", and a layer tensor's "Format/Datatype" is
split in two. The data-type key is spelled "DataType" in the guide's I/O tensors and "Datatype" in the layer-info
schema of NVIDIA/TensorRT main (.agents/skills/trt-perf-analysis/schemas/analyze-data.schema.json, tensor:
Name, Datatype, Dimensions, Format, StrideOrder, Strides): both appear below. Myelin sub-layers carry lowercase
layer types: "gemm" (samples/sampleEditableTimingCache/README.md, release/10.16 and main l.54: inputs [128,128] x
[128,128], "Format/Datatype: Float") and "kgen" (.agents/skills/trt-perf-analysis/SKILL.md, main).
"""

from __future__ import annotations

from typing import Any

INT8_32 = "Thirty-two wide channel vectorized row major Int8 format"
FP16_2 = "Two wide channel vectorized row major FP16 format"
FP32 = "Row major linear FP32"


def _tensor(name: str, dims: list[int], **fields: Any) -> dict[str, Any]:
    return {"Name": name, "Location": "Device", "Dimensions": dims, **fields}


def ten(name: str, dims: list[int], text: str) -> dict[str, Any]:
    return _tensor(name, dims, **{"Format/Datatype": text})


STEM_FLOPS = 2 * (2 * 16 * 32 * 32) * 3 * 7 * 7  # conv 7x7/2 on 2x3x64x64 -> 2x16x32x32, then max-pooled to 16x16
DEPTHWISE_FLOPS = 2 * (2 * 16 * 16 * 16) * 1 * 3 * 3
POINTWISE_FLOPS = 2 * (2 * 8 * 16 * 16) * 16


def resnet_like_10x() -> dict[str, Any]:
    """A Q/DQ network in the 10.x layout: QDQ reformat, fused ConvActPool stem, depthwise and pointwise
    convolutions (one fused with a residual input), an FP16 pooling and an FP32 NoOp."""
    return {"Layers": [
        {"Name": "QuantizeLinear_2", "LayerType": "Reformat", "Inputs": [ten("input.1", [2, 3, 64, 64], FP32)],
         "Outputs": [ten("q_in", [2, 3, 64, 64], "Row major Int8 format")], "ParameterType": "Reformat",
         "Origin": "QDQ", "TacticValue": "0x00000000000003ea"},
        {"Name": "conv1.weight + QuantizeLinear_7 + Conv_9 + MaxPool_12", "LayerType": "ConvActPool",
         "Inputs": [ten("q_in", [2, 3, 64, 64], "Row major Int8 format")],
         "Outputs": [ten("pooled", [2, 16, 16, 16], INT8_32)],
         "ParameterType": "ConvActPool", "ConvParameterType": "Convolution", "ConvKernel": [7, 7],
         "ConvPaddingMode": "kEXPLICIT_ROUND_DOWN", "ConvPrePadding": [3, 3], "ConvPostPadding": [3, 3],
         "ConvStride": [2, 2], "ConvDilation": [1, 1], "ConvOutMaps": 16, "ConvGroups": 1,
         "ConvWeights": {"Type": "Int8", "Count": 2352}, "ConvBias": {"Type": "Float", "Count": 16},
         "ConvHasSparseWeights": 0, "ConvActivation": "RELU", "PoolingParameterType": "Pooling",
         "PoolingPoolingType": "MAX", "PoolingWindowSize": [3, 3], "PoolingPaddingMode": "kEXPLICIT_ROUND_DOWN",
         "PoolingPrePadding": [1, 1], "PoolingPostPadding": [1, 1], "PoolingStride": [2, 2],
         "TacticValue": "0x0000000000000461"},
        {"Name": "block.dw.weight + QuantizeLinear_21 + Conv_23 + PWN(Clip_27)",
         "LayerType": "CudaDepthwiseConvolution", "Inputs": [ten("pooled", [2, 16, 16, 16], INT8_32)],
         "Outputs": [ten("dw", [2, 16, 16, 16], INT8_32)], "ParameterType": "Convolution", "Kernel": [3, 3],
         "PaddingMode": "kEXPLICIT_ROUND_DOWN", "PrePadding": [1, 1], "PostPadding": [1, 1], "Stride": [1, 1],
         "Dilation": [1, 1], "OutMaps": 16, "Groups": 16, "Weights": {"Type": "Int8", "Count": 144},
         "Bias": {"Type": "Float", "Count": 16}, "HasSparseWeights": 0, "Activation": "CLIPPED_RELU",
         "ParameterSubType": "[0.000000,127.000000]", "HasBias": 1, "TacticValue": "0x0000000000000001"},
        {"Name": "block.pw.weight + QuantizeLinear_30 + Conv_32 + Add_35", "LayerType": "CaskConvolution",
         "Inputs": [ten("dw", [2, 16, 16, 16], INT8_32), ten("skip", [2, 8, 16, 16], INT8_32)],
         "Outputs": [ten("pw", [2, 8, 16, 16], FP16_2)], "ParameterType": "Convolution", "Kernel": [1, 1],
         "PaddingMode": "kEXPLICIT_ROUND_DOWN", "PrePadding": [0, 0], "PostPadding": [0, 0], "Stride": [1, 1],
         "Dilation": [1, 1], "OutMaps": 8, "Groups": 1, "Weights": {"Type": "Int8", "Count": 128},
         "Bias": {"Type": "Float", "Count": 8}, "HasSparseWeights": 0, "Activation": "NONE", "HasBias": 1,
         "HasReLU": 0, "TacticValue": "0x2e36b5d3b22f7d55"},
        {"Name": "GlobalAveragePool_747", "LayerType": "TiledPooling", "Inputs": [ten("pw", [2, 8, 16, 16], FP16_2)],
         "Outputs": [ten("gap", [2, 8, 1, 1], FP16_2)], "ParameterType": "Pooling", "PoolingType": "AVERAGE",
         "WindowSize": [16, 16], "TacticValue": "0x00000000007f0101"},
        {"Name": "copied_squeeze_after_(Unnamed Layer* 80) [ElementWise]", "LayerType": "NoOp",
         "Inputs": [ten("gap", [2, 8, 1, 1], FP32)], "Outputs": [ten("logits", [2, 8], FP32)],
         "TacticValue": "0x0000000000000000"},
    ], "Bindings": ["input.1", "logits"]}


def myelin_10x() -> dict[str, Any]:
    """A 10.x engine with one Myelin region: its FLOPs cannot be counted from the inspector."""
    return {"Layers": [
        {"Name": "{ForeignNode[/Constant_7_output_0 + ONNXTRT_Broadcast.../Einsum_1]}", "LayerType": "Myelin",
         "Inputs": [ten("x", [1, 64, 32], "Row major linear FP16 format")],
         "Outputs": [ten("y", [1, 64, 32], "Row major linear FP16 format")], "TacticValue": "0x0000000000000000"},
        {"Name": "conv", "LayerType": "CaskConvolution", "ParameterType": "Convolution", "Kernel": [1, 1],
         "Groups": 1, "OutMaps": 4, "Inputs": [ten("y2", [1, 8, 4, 4], "Row major linear FP16 format")],
         "Outputs": [ten("z", [1, 4, 4, 4], "Row major linear FP16 format")]},
    ], "Bindings": ["x", "z"]}


GEMM_FLOPS = 2 * 128 * 128 * 128


def myelin_11x(datatype_key: str = "Datatype") -> dict[str, Any]:
    """An 11.x engine: a convolution with split Format / data type fields, Myelin sub-layers "gemm" (counted from
    its input dimensions) and "kgen" (not countable)."""
    def split(name: str, dims: list[int], dtype: str, fmt: str = "Channel major format where channel % 8 == 0 "
                                                                       "(kHWC8)") -> dict[str, Any]:
        return _tensor(name, dims, Format=fmt, **{datatype_key: dtype})

    return {"I/O Tensors": [
        {"Name": "input", "IOMode": "Input", "DataType": "Float", "Dimensions": [1, 8, 16, 16], "Location": "Device",
         "IsShapeInferenceIO": False, "ProfileInfo": [{"MinShape": [1, 8, 16, 16], "OptShape": [1, 8, 16, 16],
                                                       "MaxShape": [1, 8, 16, 16],
                                                       "Format": "Row major linear FP32 format (kLINEAR)"}]}],
        "Layers": [
            {"Name": "conv + relu", "LayerType": "CaskConvolution", "ParameterType": "Convolution", "Kernel": [3, 3],
             "PrePadding": [1, 1], "PostPadding": [1, 1], "Stride": [1, 1], "Dilation": [1, 1], "OutMaps": 4,
             "Groups": 1, "Inputs": [split("input", [1, 8, 16, 16], "Half")],
             "Outputs": [split("c", [1, 4, 16, 16], "Half")], "TacticName": "sm80_xmma_fprop_implicit_gemm"},
            {"Name": "matMul1_myl0_0", "LayerType": "gemm",
             "Inputs": [ten("input", [128, 128], "Float"), ten("weight1", [128, 128], "Float"),
                        ten("__mye34matMul1_alpha", [1], "Float"), ten("__mye35matMul1_beta", [1], "Float")],
             "Outputs": [ten("__myln_k_arg__bb1_4", [128, 128], "Float")],
             "TacticName": "sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize32x32x64_stage3_warpsize2x1x2_tensor16x8x8",
             "StreamId": 0, "Metadata": ""},
            {"Name": "__myl_MulAddRes_myl0_1", "LayerType": "kgen",
             "Inputs": [split("__myln_k_arg__bb1_4", [128, 128], "Half", "Row major linear format (kLINEAR)")],
             "Outputs": [split("out", [128, 128], "Half", "Row major linear format (kLINEAR)")], "StreamId": 0},
        ]}
