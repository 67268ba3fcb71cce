"""Tiny ONNX graphs for the accuracy-recovery tests (bias correction, equalization, AdaRound)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


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
