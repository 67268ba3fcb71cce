"""Tiny ONNX graphs for the accuracy-recovery tests (bias correction, equalization, AdaRound, distillation), and
what those tests measure them with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.calib.collect import collect_stats
from deploykit.calib.methods import MinMax, amax
from deploykit.calib.qdq import QdqBuilder, calibration_tensors
from deploykit.evaluate import session_from_onnx


def conv(name: str, x: str, y: str, weight: np.ndarray, bias: np.ndarray | None, *, group: int = 1,
         pads: Sequence[int] = (1, 1, 1, 1)) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    inits = [numpy_helper.from_array(weight.astype(np.float32), f"{name}.weight")]
    inputs = [x, f"{name}.weight"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), f"{name}.bias"))
        inputs.append(f"{name}.bias")
    node = helper.make_node("Conv", inputs, [y], name=name, group=group, pads=list(pads),
                            kernel_shape=list(weight.shape[2:]))
    return node, inits


def model(nodes: Sequence[onnx.NodeProto], inits: Sequence[onnx.TensorProto], channels: int,
          out_channels: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), "recovery", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, None, None])], list(inits))
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    built.ir_version = 9
    onnx.checker.check_model(built)
    return built


def clip_node(name: str, x: str, y: str, high: float = 6.0) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    low_name, high_name = f"{name}.min", f"{name}.max"
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), low_name),
             numpy_helper.from_array(np.array(high, np.float32), high_name)]
    return helper.make_node("Clip", [x, low_name, high_name], [y], name=name), inits


def inputs(count: int, channels: int, size: tuple[int, int] = (12, 14), *, seed: int = 0,
           scale: float = 1.0, shift: float = 0.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(shift + scale * rng.standard_normal((1, channels, *size))).astype(np.float32) for _ in range(count)]


def two_layers(seed: int = 0) -> onnx.ModelProto:
    """conv -> relu -> conv with one large weight per output channel: the INT8 grids are coarse for the other
    weights, and the second layer's rounding errors add to the first's."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.standard_normal((8, 3, 3, 3)) * 0.1, rng.standard_normal((4, 8, 3, 3)) * 0.1
    w1[:, 0, 0, 0], w2[:, 0, 0, 0] = 2.0, 2.0
    first, inits1 = conv("c1", "x", "h", w1, rng.standard_normal(8) * 0.1)
    second, inits2 = conv("c2", "r", "y", w2, rng.standard_normal(4) * 0.1)
    return model([first, helper.make_node("Relu", ["h"], ["r"], name="relu"), second], [*inits1, *inits2], 3, 4)


def minmax_builder(source: onnx.ModelProto, calibration: list[np.ndarray]) -> QdqBuilder:
    """A Q/DQ builder of `source` with minmax ranges from `calibration`, inputs-only layout."""
    stats = collect_stats(source, calibration_tensors(source), iter(calibration)).stats
    return QdqBuilder(source, {name: amax(s, MinMax()) for name, s in stats.items()}, quantize_outputs=False)


def output_error(graph: onnx.ModelProto, reference: onnx.ModelProto, xs: list[np.ndarray]) -> float:
    """Mean squared difference of the two graphs' outputs over `xs` (ONNX Runtime, optimizations off)."""
    runs = [session_from_onnx(m.SerializeToString(), optimization="disable") for m in (reference, graph)]
    return float(np.mean([np.mean((runs[0].run(None, {"x": x})[0] - runs[1].run(None, {"x": x})[0]) ** 2)
                          for x in xs]))
