"""INT8 weight width for ONNX Runtime's U8S8 kernels: full range on VNNI CPUs, 7 bits without (issue 15 item 3).

ORT's UINT8 x INT8 GEMM on x86 without VNNI uses VPMADDUBSW, which adds pairs of u8 * s8 products in
saturating int16: full-range weights overflow it (2 * 255 * 127 > 32767) and outputs go wrong (ONNX Runtime's
quantization guide: reduce_range on AVX2/AVX-512 machines without VNNI). With VNNI (AVX512-VNNI, AVX-VNNI; AMX
CPUs have both) VPDPBUSD accumulates in int32 and full-range weights are exact, so they are kept there.

The 7-bit weights are quantized from the float weights, once: q7 = clip(round(w / s7), -63, 63) with
s7 = max|w| / 63 per output channel (twice the INT8 scale's 127/63). Requantizing the INT8 codes instead
(round(q8 * 63 / 127)) rounds twice and can be off by one 7-bit step more. The float weights come from the
source model handed to the lowering: the Q/DQ graph keeps every node name, so a weighted node's float weight
is its namesake's input 1 in the source (the precision graph itself stays as TensorRT needs it, INT8 codes only).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from deploykit.backends.onnxruntime.unsigned import QMAX
from deploykit.environment import cpu_flags
from deploykit.graph.tensors import ensure_node_names

SEVEN_BIT = 63
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
    """Per-channel INT8 weights (DequantizeLinear of an INT8 initializer) to [-63, 63], in place. From the float
    weight when `floats` has it (and it matches the codes' shape), else requantized from the INT8 codes.
    Returns (weights changed, of which from float)."""
    inits = {init.name: init for init in model.graph.initializer}
    changed = from_float = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in inits:
            continue
        weight, scale = inits[node.input[0]], inits[node.input[1]]
        if weight.data_type != TensorProto.INT8 or not scale.dims:
            continue  # activations have a scalar scale; weights have one per channel
        q8 = numpy_helper.to_array(weight)
        s8 = numpy_helper.to_array(scale).astype(np.float32)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        axis = axis % q8.ndim
        s7 = (s8 * (QMAX / SEVEN_BIT)).astype(np.float32)
        shape = [1] * q8.ndim
        shape[axis] = -1
        source = floats.get(weight.name) if floats is not None else None
        if source is not None and source.shape == q8.shape:
            q7 = np.round(source.astype(np.float32) / s7.reshape(shape))
            from_float += 1
        else:
            q7 = np.round(q8.astype(np.float32) * (SEVEN_BIT / QMAX))
        weight.CopyFrom(numpy_helper.from_array(np.clip(q7, -SEVEN_BIT, SEVEN_BIT).astype(np.int8), weight.name))
        scale.CopyFrom(numpy_helper.from_array(s7, scale.name))
        changed += 1
    return changed, from_float

