"""ONNX Runtime's compile step: a precision-transformed ONNX model -> an ORT-optimized ONNX model.

The artifact is what ONNX Runtime writes with SessionOptions.optimized_model_filepath at the *extended*
level: fusions (Conv+activation, QDQ -> QLinearConv, ...) that are valid on any CPU. The *all* level would add
NCHWc layout transforms tied to this CPU's vector width (ORT warns the result "should only be used in the same
environment"); sessions apply those at load time anyway, so the artifact stays portable and the sidecar still
records the CPU it was built on.

INT8 lowering for ONNX Runtime (`unsigned_after_activation`): the Q/DQ graph is symmetric INT8 (TensorRT needs
zero point 0). On x86, ORT turns INT8 activations into UINT8 with zero point 128, so a Relu or Clip(0, max)
before a QuantizeLinear can no longer be folded away and must run in float between a DequantizeLinear and a
QuantizeLinear, which makes INT8 slower than FP32. Where the quantized tensor is the output of Relu or
Clip(min >= 0) it is non-negative, and UINT8 with zero point 0 and scale s * 127 / 255 covers exactly the same
range [0, 127 s] as the symmetric INT8 pair (same saturation point, steps half as coarse); for Clip(0, M) the
scale is at most M / 255, so the Q range equals the clip range. ORT then drops the activation and fuses
DQ -> Conv -> Q into QLinearConv. It is an ONNX Runtime lowering only: the precision graph kept next to the
artifact (model.int8.onnx, what TensorRT compiles) is unchanged, and the ORT artifact's rounding is at least
as fine as TensorRT's.

Second lowering (`seven_bit_weights`), on x86 CPUs without VNNI only: ORT's UINT8 x INT8 kernels use
VPMADDUBSW there, which adds pairs of u8 * s8 products in saturating int16; full-range INT8 weights overflow it
(2 * 255 * 127 > 32767) and the outputs go wrong (ONNX Runtime's quantization guide: use reduce_range on
AVX2/AVX-512 machines without VNNI). Weights are then requantized to [-63, 63] with twice the scale, which
keeps the fast kernel exact. On a measured tiny DeepLabv3+ the full-range artifact reached cosine 0.991
against FP32, the 7-bit one 0.998 (the exact Q/DQ simulation: 0.998). The sidecar records the choice and
the CPU flags.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

from deploykit.backends.onnxruntime.runner import session_options
from deploykit.errors import BuildError
from deploykit.graph.tensors import all_names, constant_array, index_graph, unique_name
from deploykit.io.outputs import atomic_output

OPTIMIZATION = "extended"
QMAX = 127


@dataclass(frozen=True)
class Lowered:
    model: onnx.ModelProto
    unsigned: int  # QuantizeLinear nodes turned UINT8
    seven_bit: int = 0  # weights requantized to [-63, 63]


def needs_seven_bit_weights() -> bool:
    """True on x86 CPUs without VNNI, where ORT's u8 x s8 kernels saturate (see the module docstring)."""
    import platform

    from deploykit.environment import cpu_flags

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not (cpu_flags() & {"avx512_vnni", "avx_vnni", "avx512vnni"})


def _scalar(model: onnx.ModelProto, name: str) -> float | None:
    for init in model.graph.initializer:
        if init.name == name:
            value = numpy_helper.to_array(init)
            return float(value.reshape(-1)[0]) if value.size == 1 else None
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            array = constant_array(node)
            return float(array.reshape(-1)[0]) if array is not None and array.size == 1 else None
    return None


def _clip_bounds(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[float, float] | None:
    if node.op_type == "Relu":
        return (0.0, float("inf"))
    if node.op_type != "Clip" or len(node.input) < 2 or not node.input[1]:
        return None
    low = _scalar(model, node.input[1])
    high = _scalar(model, node.input[2]) if len(node.input) > 2 and node.input[2] else float("inf")
    return None if low is None or high is None or low < 0.0 else (low, high)


def unsigned_after_activation(model: onnx.ModelProto) -> Lowered:
    """Copy of `model` with INT8 Q/DQ pairs after Relu / Clip(min >= 0) turned UINT8 (see module docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    index = index_graph(model, infer_types=False)
    taken = all_names(model)
    added: list[onnx.TensorProto] = []
    changed = 0
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3:
            continue
        zero = index.initializers.get(node.input[2])
        scale = _scalar(model, node.input[1])
        producer = index.producer.get(node.input[0])
        bounds = _clip_bounds(model, producer) if producer is not None else None
        if zero is None or zero.data_type != TensorProto.INT8 or scale is None or bounds is None:
            continue
        if numpy_helper.to_array(zero).size != 1 or int(numpy_helper.to_array(zero).reshape(-1)[0]) != 0:
            continue
        dequantizers = [c for c, _ in index.consumers.get(node.output[0], [])]
        if not dequantizers or any(c.op_type != "DequantizeLinear" for c in dequantizers):
            continue
        new_scale = min(scale * QMAX / 255.0, bounds[1] / 255.0)
        scale_name = unique_name(f"{node.input[1]}_u8", taken)
        zero_name = unique_name(f"{node.input[2]}_u8", taken)
        scale_init = index.initializers.get(node.input[1])  # float16 scales in an --int8-float fp16 graph
        half = scale_init is not None and scale_init.data_type == TensorProto.FLOAT16
        scale_type = np.float16 if half else np.float32
        added += [numpy_helper.from_array(np.array(new_scale, scale_type), scale_name),
                  numpy_helper.from_array(np.array(0, np.uint8), zero_name)]
        for q_or_dq in (node, *dequantizers):
            q_or_dq.input[1], q_or_dq.input[2] = scale_name, zero_name
        changed += 1
    model.graph.initializer.extend(added)
    return Lowered(model, changed)


def seven_bit_weights(model: onnx.ModelProto) -> int:
    """Requantize per-channel INT8 weights (DequantizeLinear of an INT8 initializer) to [-63, 63], in place."""
    inits = {init.name: init for init in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[1] not in inits:
            continue
        weight, scale = inits[node.input[0]], inits[node.input[1]]
        if weight.data_type != TensorProto.INT8 or not scale.dims:
            continue  # activations have a scalar scale; weights have one per channel
        q = numpy_helper.to_array(weight).astype(np.float32)
        weight.CopyFrom(numpy_helper.from_array(
            np.clip(np.round(q * 63.0 / QMAX), -63, 63).astype(np.int8), weight.name))
        scale.CopyFrom(numpy_helper.from_array(
            (numpy_helper.to_array(scale) * (QMAX / 63.0)).astype(np.float32), scale.name))
        changed += 1
    return changed


def lower_for_onnxruntime(model: onnx.ModelProto, *, seven_bit: bool | None = None) -> Lowered:
    """Both INT8 lowerings (module docstring); a model without Q/DQ comes back unchanged."""
    lowered = unsigned_after_activation(model)
    wanted = needs_seven_bit_weights() if seven_bit is None else seven_bit
    count = seven_bit_weights(lowered.model) if wanted else 0
    return Lowered(lowered.model, lowered.unsigned, count)


def ort_optimized(model: onnx.ModelProto, *, threads: int | None = None, what: str = "the model"
                  ) -> onnx.ModelProto:
    """ONNX Runtime's optimized form of an already lowered `model` (what the artifact holds), in memory."""
    with tempfile.TemporaryDirectory(prefix="deploykit-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        options = session_options(threads, optimization=OPTIMIZATION)
        options.optimized_model_filepath = str(optimized)
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types
            raise BuildError(f"ONNX Runtime could not optimize {what}: {str(exc).splitlines()[0]}") from exc
        return onnx.load(str(optimized))


def ort_model_from_onnx(
    onnx_path: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool, threads: int | None = None,
    seven_bit: bool | None = None,
) -> Lowered:
    """Write ONNX Runtime's optimized form of `onnx_path` to `out` (atomically); metadata is carried over.
    Returns what the INT8 lowerings changed (its model is the lowered graph before ORT's optimizations)."""
    source = onnx.load(str(onnx_path))
    result = lower_for_onnxruntime(source, seven_bit=seven_bit)
    model = ort_optimized(result.model, threads=threads, what=str(onnx_path))
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    with atomic_output(out, force=force) as tmp_path:
        onnx.save(model, str(tmp_path))
    return result
