"""INT8 weight width for the CPU runtimes' U8S8 kernels: full range on VNNI CPUs, 7 bits without (issue 15
item 3; issue 20 for OpenVINO).

x86 u8 x s8 kernels without VNNI use VPMADDUBSW, which adds pairs of u8 * s8 products in saturating int16:
full-range weights overflow it (2 * 255 * 127 > 32767) and outputs go wrong. ONNX Runtime's quantization guide
says so (reduce_range on AVX2/AVX-512 machines without VNNI), and OpenVINO's CPU plugin does the same: on an
AVX2 EPYC its INT8 convolutions of deploykit's Q/DQ graph were off by 18% of the output range from the graph's
own values, and exact (2e-7) with 7-bit weights (NNCF's `overflow_fix` halves the weight range for the same
reason). With VNNI (AVX512-VNNI, AVX-VNNI; AMX CPUs have both) VPDPBUSD accumulates in int32 and full-range
weights are exact, so they are kept there. Both CPU backends lower their artifacts with this module; the
precision graph TensorRT compiles keeps full-range INT8.

Depthwise convolutions (one input channel per group, one output channel per group) keep full-range weights on
every CPU: neither runtime runs them through VPMADDUBSW. ONNX Runtime's depthwise kernel (MLAS
qdwconv_avx2.cpp, MlasConvDepthwiseKernelAvx2) widens inputs and weights to int16 and accumulates their
products in int32; OpenVINO's depthwise INT8 kernel matched the graph's own arithmetic on an AVX2 EPYC too
(tests/graph/test_saturation.py checks both, on this CPU). Their weights have 9 values per channel, which 7 bits
round coarsely: on the demo's DeepLabv3+ MobileNetV2 (17 depthwise convs, 12 report images, AVX2 EPYC, `python
benchmarks/bench_cpu_peers.py --models deeplabv3plus_mobilenetv2,msinet --rounds 20 --warmup 2`) the ONNX Runtime
artifact's pixel agreement went from 0.9687 to 0.9716 and OpenVINO's from 0.9698 to 0.9713.

The 7-bit weights are quantized from the float weights, once: q7 = clip(round(w / s7), -64, 64) with
s7 = max|w| / 64 per output channel. [-64, 64] is the widest grid whose pair sums cannot saturate
(2 * 255 * 64 = 32640 <= 32767; ONNX Runtime's reduce_range grid); [-63, 63], used before, was 1.6% coarser for
nothing (same benchmark: ONNX Runtime pixel agreement 0.9716 -> 0.9738 on the 12 report images, 0.9845 -> 0.9809
on 8 unused calibration images; near-tie images move either way). Requantizing the
INT8 codes instead (round(q8 * 64 / 127)) rounds twice and can be off by one 7-bit step more. The float weights
come from the source model handed to the lowering: the Q/DQ graph keeps every node name, so a weighted node's
float weight is its namesake's input 1 in the source (the precision graph itself stays as TensorRT needs it, INT8
codes only).
A float weight is used only where the INT8 codes are that weight rounded to nearest: codes that differ (weights
cross-layer equalized after the source was saved, or rounded by AdaRound) are requantized from the codes.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from deploykit.environment import cpu_flags
from deploykit.graph.tensors import ensure_node_names

QMAX = 127
SEVEN_BIT = 64  # [-64, 64]: module docstring
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "avx512vnni", "amx_int8"})
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def needs_seven_bit_weights(flags: set[str] | None = None, machine: str | None = None) -> bool:
    """True on x86 CPUs without VNNI (module docstring); `flags` default to /proc/cpuinfo's."""
    arch = (machine or platform.machine()).lower()
    if arch not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not ((cpu_flags() if flags is None else flags) & VNNI_FLAGS)


def float_weights(qdq: onnx.ModelProto, source: onnx.ModelProto) -> dict[str, np.ndarray]:
    """INT8 weight initializer name in `qdq` -> the float weight it was quantized from in `source`."""
    graph = onnx.GraphProto()
    graph.node.extend(source.graph.node)
    ensure_node_names(graph)  # as the Q/DQ builder named them (deterministic)
    source_inits = {init.name: init for init in source.graph.initializer}
    source_nodes = {n.name: n for n in graph.node if n.op_type in WEIGHTED}
    dq_input = {n.output[0]: n.input[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    found: dict[str, np.ndarray] = {}
    for node in qdq.graph.node:
        twin = source_nodes.get(node.name)
        if twin is None or node.op_type != twin.op_type or len(node.input) < 2 or len(twin.input) < 2:
            continue
        codes, weight = dq_input.get(node.input[1]), source_inits.get(twin.input[1])
        if codes is not None and weight is not None and weight.data_type == TensorProto.FLOAT:
            found[codes] = numpy_helper.to_array(weight)
    return found


def seven_bit_weights(model: onnx.ModelProto, floats: Mapping[str, np.ndarray] | None = None) -> tuple[int, int]:
    """Per-channel INT8 weights (DequantizeLinear of an INT8 initializer) to [-64, 64], in place, except a
    depthwise convolution's (module docstring). From the float weight when `floats` has it (and it matches the
    codes' shape), else requantized from the INT8 codes. Returns (weights changed, of which from float)."""
    inits = {init.name: init for init in model.graph.initializer}
    depthwise = depthwise_weights(model)
    changed = from_float = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in inits:
            continue
        if node.input[0] in depthwise:
            continue
        weight, scale = inits[node.input[0]], inits[node.input[1]]
        if weight.data_type != TensorProto.INT8 or not scale.dims:
            continue  # activations have a scalar scale; weights have one per channel
        q8 = numpy_helper.to_array(weight)
        scale_type = numpy_helper.to_array(scale).dtype  # float16 in an --int8-float fp16 graph: DQ's output type
        s8 = numpy_helper.to_array(scale).astype(np.float32)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        axis = axis % q8.ndim
        s7 = (s8 * (QMAX / SEVEN_BIT)).astype(np.float32)
        shape = [1] * q8.ndim
        shape[axis] = -1
        source = floats.get(weight.name) if floats is not None else None
        if source is not None and _rounds_to(source, s8, q8, axis):
            q7 = np.round(source.astype(np.float32) / s7.reshape(shape))
            from_float += 1
        else:
            q7 = np.round(q8.astype(np.float32) * (SEVEN_BIT / QMAX))
        weight.CopyFrom(numpy_helper.from_array(np.clip(q7, -SEVEN_BIT, SEVEN_BIT).astype(np.int8), weight.name))
        scale.CopyFrom(numpy_helper.from_array(s7.astype(scale_type), scale.name))
        changed += 1
    return changed, from_float



def depthwise_weights(model: onnx.ModelProto) -> set[str]:
    """INT8 weight initializers dequantized into a depthwise Conv: group == output channels, one input channel
    per group (the channel multiplier 1 the runtimes' depthwise kernels take)."""
    inits = {init.name: init for init in model.graph.initializer}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    found = set()
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        codes = dequantized.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        weight = inits.get(codes) if codes is not None else None
        if weight is not None and group > 1 and len(weight.dims) >= 2 and weight.dims[1] == 1 \
                and weight.dims[0] == group:
            found.add(weight.name)
    return found


def _rounds_to(weight: np.ndarray, scale: np.ndarray, codes: np.ndarray, axis: int) -> bool:
    """Whether `codes` are `weight` rounded to nearest on `scale`'s grid (module docstring)."""
    if weight.shape != codes.shape:
        return False
    shape = [1] * codes.ndim
    shape[axis] = -1
    nearest = np.clip(np.round(weight.astype(np.float32) / scale.reshape(shape)), -QMAX, QMAX)
    return bool(np.array_equal(nearest, codes.astype(np.float32)))
