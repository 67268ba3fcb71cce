"""Tiny ONNX graphs of one convolution (or a depthwise + pointwise pair), built directly with onnx.helper,
and the same arithmetic in PyTorch, so each backend and precision times exactly the kernel in question.

- fp32 / fp16: inputs, weights, biases and outputs all in that type (no Cast at the edges).
- int8: explicit Q/DQ as deploykit's INT8 pass writes it, TensorRT's form (symmetric, zero points 0; weights per
  output channel on axis 0; the bias stays float: IDequantizeLayer takes INT8, FP8, INT4 or FP4 only,
  NVIDIA/TensorRT include/NvInfer.h, so an INT32 bias behind a DequantizeLinear does not parse). The graph takes
  and returns int8 tensors: DequantizeLinear -> Conv -> QuantizeLinear per convolution, which TensorRT fuses
  into one INT8 convolution. ONNX Runtime fuses it into QLinearConv only where signed activations are safe: on
  x86 without VNNI (AVX2) it keeps DQ -> fp32 Conv -> Q, because its u8s8 kernels (VPMADDUBSW) need unsigned
  activations.
- int8u8: ONNX Runtime's QOperator form: activations re-encoded as uint8 with zero point 128 (q_u8 = q_s8 + 128,
  same scale: identical numbers), which ONNX Runtime on AVX2 does run as QLinearConv, the bias int32 with scale
  = input scale x weight scale (its QDQ Conv pattern), and weights in 7 bits ([-64, 64], ORT's "reduce_range"):
  VPMADDUBSW adds two u8 x s8 products in int16, which saturates with full-range weights (2 x 255 x 127 > 32767)
  and gives wrong results on CPUs without VNNI (seen here: errors of 100 steps).
Weights are random with variance 1/fan_in so activations stay near unit scale; inputs are standard normal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch.nn import functional as F

from deploykit.graph.seven_bit import SEVEN_BIT
from deploykit.precision.table import PRECISIONS

OPSET = 18
UNSIGNED = "int8u8"  # the sweep's own variant beside the precisions of the table (module docstring)


def element_type(variant: str) -> int:
    """The ONNX element type a variant's graph computes in: its precision entry's, uint8 for int8u8."""
    return TensorProto.UINT8 if variant == UNSIGNED else PRECISIONS[variant].element_type


def element_bytes(variant: str) -> int:
    return int(np.dtype(helper.tensor_dtype_to_np_dtype(element_type(variant))).itemsize)


def is_float(variant: str) -> bool:
    """Whether a variant's graph is a float chain (float_graph) rather than a Q/DQ one (int8_graph)."""
    return bool(np.issubdtype(helper.tensor_dtype_to_np_dtype(element_type(variant)), np.floating))
INPUT_RANGE = 4.0  # activations are quantized over +-4 (4 standard deviations of the inputs)


@dataclass(frozen=True)
class ConvOp:
    """One stride-1 'same' convolution: cin -> cout channels, kernel x kernel, dilation, groups."""

    cin: int
    cout: int
    kernel: int = 3
    dilation: int = 1
    groups: int = 1

    @property
    def padding(self) -> int:
        return self.dilation * (self.kernel - 1) // 2

    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.cout, self.cin // self.groups, self.kernel, self.kernel)

    def madds(self, size: int, batch: int = 1) -> int:
        return batch * size * size * self.cout * (self.cin // self.groups) * self.kernel**2

    def bytes_moved(self, size: int, precision: str, batch: int = 1) -> int:
        """Minimum traffic: read input and weights once, write the output once."""
        elements = batch * size * size * (self.cin + self.cout) + math.prod(self.weight_shape())
        return elements * element_bytes(precision)


@dataclass
class ConvWeights:
    weight: np.ndarray  # float32
    bias: np.ndarray  # float32


def random_weights(ops: Sequence[ConvOp], seed: int = 0) -> list[ConvWeights]:
    rng = np.random.default_rng(seed)
    out = []
    for op in ops:
        fan_in = (op.cin // op.groups) * op.kernel**2
        weight = (rng.standard_normal(op.weight_shape()) / math.sqrt(fan_in)).astype(np.float32)
        out.append(ConvWeights(weight, (0.1 * rng.standard_normal(op.cout)).astype(np.float32)))
    return out


def _conv_node(op: ConvOp, x: str, w: str, b: str, y: str) -> onnx.NodeProto:
    pad = op.padding
    return helper.make_node("Conv", [x, w, b], [y], kernel_shape=[op.kernel, op.kernel],
                            dilations=[op.dilation, op.dilation], pads=[pad, pad, pad, pad], group=op.groups,
                            strides=[1, 1])


def float_graph(ops: Sequence[ConvOp], weights: Sequence[ConvWeights], size: int, precision: str = "fp32",
                batch: int = 1) -> onnx.ModelProto:
    """The chain of convolutions in fp32 or fp16 throughout."""
    dtype = helper.tensor_dtype_to_np_dtype(element_type(precision))
    nodes, inits = [], []
    current = "x"
    for i, (op, wts) in enumerate(zip(ops, weights, strict=True)):
        out = "y" if i == len(ops) - 1 else f"t{i}"
        inits += [numpy_helper.from_array(wts.weight.astype(dtype), f"w{i}"),
                  numpy_helper.from_array(wts.bias.astype(dtype), f"b{i}")]
        nodes.append(_conv_node(op, current, f"w{i}", f"b{i}", out))
        current = out
    return _model(nodes, inits, ops, size, batch, element_type(precision), f"conv chain {precision}")


def weight_scales(weight: np.ndarray, levels: int = 127) -> np.ndarray:
    """Symmetric per-output-channel scales (max |w| / levels; 127, or 64 for 7-bit weights)."""
    peak = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    return (np.maximum(peak, 1e-8) / levels).astype(np.float32)


def weight_levels(unsigned: bool) -> int:
    """Weight range: full int8, or 7 bits beside uint8 activations (see the module docstring)."""
    return SEVEN_BIT if unsigned else 127


def quantize(values: np.ndarray, scale: np.ndarray | float, axis: int | None = None,
             dtype: type = np.int8) -> np.ndarray:
    """Round-half-to-even and saturate, as ONNX QuantizeLinear does."""
    scale_array = np.asarray(scale, dtype=np.float32)
    if axis is not None:
        shape = [1] * values.ndim
        shape[axis] = -1
        scale_array = scale_array.reshape(shape)
    low, high = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
    return np.clip(np.rint(values / scale_array), low, high).astype(dtype)


def int8_graph(ops: Sequence[ConvOp], weights: Sequence[ConvWeights], size: int, activation_scales: Sequence[float],
               batch: int = 1, *, unsigned: bool = False) -> onnx.ModelProto:
    """The chain in explicit symmetric Q/DQ; activation_scales has one scale per tensor (input + each output).
    `unsigned` re-encodes activations as uint8 with zero point 128 (the int8u8 variant)."""
    act_zero = np.array(128, np.uint8) if unsigned else np.array(0, np.int8)
    nodes, inits = [], []
    current = "x"
    for i, (op, wts) in enumerate(zip(ops, weights, strict=True)):
        s_in, s_out = activation_scales[i], activation_scales[i + 1]
        w_scale = weight_scales(wts.weight, weight_levels(unsigned))
        inits += [
            numpy_helper.from_array(np.array(s_in, np.float32), f"s{i}"),
            numpy_helper.from_array(act_zero, f"z{i}"),
            numpy_helper.from_array(quantize(wts.weight, w_scale, axis=0), f"wq{i}"),
            numpy_helper.from_array(w_scale, f"ws{i}"),
            numpy_helper.from_array(np.zeros(op.cout, np.int8), f"wz{i}"),
        ]
        nodes += [
            helper.make_node("DequantizeLinear", [current, f"s{i}", f"z{i}"], [f"xf{i}"]),
            helper.make_node("DequantizeLinear", [f"wq{i}", f"ws{i}", f"wz{i}"], [f"wf{i}"], axis=0),
        ]
        if unsigned:  # ONNX Runtime's QOperator form: an int32 bias on the input x weight scale grid
            inits += [numpy_helper.from_array(quantize(wts.bias, s_in * w_scale, axis=0, dtype=np.int32), f"bq{i}"),
                      numpy_helper.from_array((s_in * w_scale).astype(np.float32), f"bs{i}"),
                      numpy_helper.from_array(np.zeros(op.cout, np.int32), f"bz{i}")]
            nodes.append(helper.make_node("DequantizeLinear", [f"bq{i}", f"bs{i}", f"bz{i}"], [f"bf{i}"], axis=0))
        else:  # TensorRT's form: the bias stays float
            inits.append(numpy_helper.from_array(wts.bias.astype(np.float32), f"bf{i}"))
        out = "y" if i == len(ops) - 1 else f"q{i}"
        nodes.append(_conv_node(op, f"xf{i}", f"wf{i}", f"bf{i}", f"yf{i}"))
        inits += [numpy_helper.from_array(np.array(s_out, np.float32), f"so{i}"),
                  numpy_helper.from_array(act_zero, f"zo{i}")]
        nodes.append(helper.make_node("QuantizeLinear", [f"yf{i}", f"so{i}", f"zo{i}"], [out]))
        current = out
    elem = TensorProto.UINT8 if unsigned else TensorProto.INT8
    return _model(nodes, inits, ops, size, batch, elem, f"conv chain {UNSIGNED if unsigned else 'int8'} Q/DQ")


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], ops: Sequence[ConvOp], size: int,
           batch: int, elem: int, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", elem, [batch, ops[0].cin, size, size])],
        [helper.make_tensor_value_info("y", elem, [batch, ops[-1].cout, size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="deploykit")
    model.ir_version = 9  # ONNX Runtime 1.18+ reads IR 9; keeps the graphs portable to older runtimes
    onnx.checker.check_model(model)
    return model


def torch_chain(ops: Sequence[ConvOp], weights: Sequence[ConvWeights]) -> torch.nn.Module:
    """The same chain as a PyTorch module (eager fp32), weights copied."""
    layers = []
    for op, wts in zip(ops, weights, strict=True):
        conv = torch.nn.Conv2d(op.cin, op.cout, op.kernel, padding=op.padding, dilation=op.dilation,
                               groups=op.groups)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(wts.weight))
            assert conv.bias is not None
            conv.bias.copy_(torch.from_numpy(wts.bias))
        layers.append(conv)
    return torch.nn.Sequential(*layers).eval()


def _dq_conv(x: torch.Tensor, op: ConvOp, wts: ConvWeights, s_in: float, unsigned: bool) -> torch.Tensor:
    """Conv of a dequantized input with weights rounded to their int8 grid, and the bias as the graph holds it
    (float in TensorRT's form, rounded to the int32 grid in ONNX Runtime's)."""
    w_scale = weight_scales(wts.weight, weight_levels(unsigned))
    weight = quantize(wts.weight, w_scale, axis=0).astype(np.float32) * w_scale[:, None, None, None]
    bias: np.ndarray = wts.bias
    if unsigned:
        bias = quantize(wts.bias, s_in * w_scale, axis=0, dtype=np.int32).astype(np.float32) * (s_in * w_scale)
    return F.conv2d(x, torch.from_numpy(weight), torch.from_numpy(bias.astype(np.float32)), padding=op.padding,
                    dilation=op.dilation, groups=op.groups)


def calibrate_scales(ops: Sequence[ConvOp], weights: Sequence[ConvWeights], sample: np.ndarray, *,
                     unsigned: bool = False) -> list[float]:
    """Activation scales: the input's fixed +-INPUT_RANGE, then max |output| / 127 of each convolution in
    the quantized chain on `sample` (so each scale sees the rounding of the ones before it)."""
    scales = [INPUT_RANGE / 127.0]
    current = quantize(sample, scales[0])
    with torch.inference_mode():
        for op, wts in zip(ops, weights, strict=True):
            y = _dq_conv(torch.from_numpy(current.astype(np.float32) * scales[-1]), op, wts, scales[-1], unsigned)
            scales.append(max(float(y.abs().max()), 1e-6) / 127.0)
            current = quantize(y.numpy(), scales[-1])
    return scales


def int8_reference(ops: Sequence[ConvOp], weights: Sequence[ConvWeights], scales: Sequence[float],
                   x_q: np.ndarray, *, unsigned: bool = False) -> np.ndarray:
    """What the int8 graph (`unsigned`: the int8u8 graph) computes, in float arithmetic: dequantize, conv
    with quantized weights and the graph's bias, requantize, per convolution. Returns the int8 output (signed)."""
    current = x_q
    with torch.inference_mode():
        for i, (op, wts) in enumerate(zip(ops, weights, strict=True)):
            y = _dq_conv(torch.from_numpy(current.astype(np.float32) * scales[i]), op, wts, scales[i], unsigned)
            current = quantize(y.numpy(), scales[i + 1])
    return current


def as_unsigned(q: np.ndarray) -> np.ndarray:
    """int8 values re-encoded as uint8 with zero point 128 (exact)."""
    return (q.astype(np.int16) + 128).astype(np.uint8)
