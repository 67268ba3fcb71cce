"""Bias correction: give each quantized layer back the mean output its quantization shifted away.

Rounding a layer's weights (and its input) to the INT8 grid moves the mean of each output channel: with
9 weights per channel a depthwise 3x3 convolution's rounding errors do not average out, and the shift adds up
through the network (Nagel et al., "Data-Free Quantization through Weight Equalization and Bias Correction",
ICCV 2019). The correction measures, on the calibration inputs, E[float layer - quantized layer] per output
channel and adds it to the layer's float bias, so the quantized layer's mean output is the float one's again.
NNCF applies the same correction by default ("fast bias correction"); it measures each layer on the float
model's inputs. Here each layer is measured on the inputs it gets in the graph being corrected (its upstream
already quantized): a twin of the layer with float weights reads the tensor the layer's Q/DQ quantizes, and
ONNX Runtime reduces the difference of the two outputs to one mean per channel on the fly (memory: one input's
activations). Every layer is measured in one pass per input and corrected at once.

The bias stays a float initializer: TensorRT adds biases in higher precision, so the correction is legal for
its explicit-quantization graphs; weights and Q/DQ are untouched. A layer without a bias gets one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from deploykit.errors import CalibrationError
from deploykit.evaluate import session_as_written
from deploykit.graph.tensors import all_names, index_graph, unique_name
from deploykit.io.onnx_graph_checks import default_opset
from deploykit.types import Progress, Progressed

CHANNEL_AXIS = {"Conv": 1, "ConvTranspose": 1, "Gemm": -1, "MatMul": -1}


@dataclass(frozen=True)
class BiasCorrection:
    """--int8-bias-correction on|off (deploykit.calib.bias_correction). On by default: see
    benchmarks/int8_recovery.py for what it gives."""

    enabled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Twin:
    node: str  # the quantized node
    output: str  # the graph output holding mean(float - quantized) per channel


def _float_input(node: onnx.NodeProto, producer: Mapping[str, onnx.NodeProto]) -> str | None:
    """The float tensor behind a node's dequantized activation input: DequantizeLinear <- QuantizeLinear <- x."""
    dq = producer.get(node.input[0])
    q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def probe_model(qdq: onnx.ModelProto, float_weights: Mapping[str, np.ndarray], nodes: Sequence[str]
                ) -> tuple[onnx.ModelProto, list[Twin]]:
    """A copy of `qdq` that also outputs, for each of `nodes` (quantized nodes, named as in `float_weights`:
    node -> its float weight), the per-channel mean of (float twin - quantized node)."""
    model = onnx.ModelProto.FromString(qdq.SerializeToString())
    index = index_graph(model, infer_types=False)
    taken = all_names(model)
    by_name = {n.name: n for n in model.graph.node}
    added: list[onnx.NodeProto] = []
    twins: list[Twin] = []
    new_axes = (default_opset(model) or 0) >= 18  # ReduceMean takes its axes as an input from opset 18
    for name in nodes:
        node = by_name.get(name)
        x = _float_input(node, index.producer) if node is not None else None
        if node is None or x is None or name not in float_weights:
            continue
        weight = unique_name(f"{name}_float_weight", taken)
        model.graph.initializer.append(numpy_helper.from_array(float_weights[name].astype(np.float32), weight))
        twin_out, diff, mean = (unique_name(f"{name}_{part}", taken) for part in ("twin", "shift", "mean_shift"))
        twin = helper.make_node(node.op_type, [x, weight, *node.input[2:]], [twin_out],
                                name=unique_name(f"{name}_twin", taken))
        twin.attribute.extend(node.attribute)
        added += [twin, helper.make_node("Sub", [twin_out, node.output[0]], [diff],
                                         name=unique_name(f"{name}_shift", taken))]
        rank = _rank(node)
        axes = [a for a in range(rank) if a != CHANNEL_AXIS[node.op_type] % rank]
        if new_axes:
            axes_name = unique_name(f"{name}_axes", taken)
            model.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), axes_name))
            added.append(helper.make_node("ReduceMean", [diff, axes_name], [mean], keepdims=0,
                                          name=unique_name(f"{name}_mean_shift", taken)))
        else:
            added.append(helper.make_node("ReduceMean", [diff], [mean], axes=axes, keepdims=0,
                                          name=unique_name(f"{name}_mean_shift", taken)))
        model.graph.output.append(helper.make_tensor_value_info(mean, onnx.TensorProto.FLOAT, None))
        twins.append(Twin(name, mean))
    model.graph.node.extend(added)  # after every original node: their inputs exist by then
    return model, twins


def _rank(node: onnx.NodeProto) -> int:
    """The output rank: 2 for Gemm, 4 for 2-D convolutions (kernel_shape tells 1-D and 3-D ones apart)."""
    if node.op_type == "Gemm":
        return 2
    kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), None)
    return 2 + len(kernel) if kernel else 4


def measure_shifts(qdq: onnx.ModelProto, float_weights: Mapping[str, np.ndarray], nodes: Sequence[str],
                   inputs: Iterable[np.ndarray], *, threads: int | None = None,
                   progress: Progress | None = None) -> dict[str, np.ndarray]:
    """node -> the mean over `inputs` of its float twin's output minus its own, per output channel."""
    probe, twins = probe_model(qdq, float_weights, nodes)
    if not twins:
        return {}
    session = session_as_written(probe.SerializeToString(), threads=threads)  # exactly what the graph says
    name = session.get_inputs()[0].name
    outputs = [t.output for t in twins]
    totals: list[np.ndarray] | None = None
    count = 0
    for x in inputs:
        values = session.run(outputs, {name: x})
        totals = values if totals is None else [t + v for t, v in zip(totals, values, strict=True)]
        count += 1
        if progress:
            progress(Progressed("bias correction (inputs)", count, count))
    if totals is None:
        raise CalibrationError("bias correction needs calibration inputs; none were read")
    return {t.node: (total / count).astype(np.float32) for t, total in zip(twins, totals, strict=True)}


def corrected_bias(bias: np.ndarray | None, shift: np.ndarray) -> np.ndarray:
    """The float bias plus its measured shift (a layer without a bias gets the shift as one)."""
    return (shift if bias is None else bias.astype(np.float32) + shift).astype(np.float32)
