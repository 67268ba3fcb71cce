"""Small hand-made ONNX graphs for the TensorRT lint and build tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IMAGE = ["batch", 3, "height", "width"]


def model(nodes: Sequence[onnx.NodeProto], *, inputs: Sequence[tuple[str, Sequence[int | str]]] = (("x", IMAGE),),
          outputs: Sequence[str] = ("y",), initializers: Sequence[onnx.TensorProto] = (), opset: int = 18,
          elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    graph = helper.make_graph(
        list(nodes), "g", [helper.make_tensor_value_info(n, elem, list(d)) for n, d in inputs],
        [helper.make_tensor_value_info(o, elem, ["n", "c", "h", "w"]) for o in outputs],
        initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def unpooling(kernel: int = 2, stride: int = 2) -> onnx.ModelProto:
    """x -> MaxPool (with Indices) -> Relu -> MaxUnpool, as converters of SegNet/DeconvNet emit it."""
    return model([
        helper.make_node("MaxPool", ["x"], ["p", "idx"], name="pool1", kernel_shape=[kernel, kernel],
                         strides=[stride, stride]),
        helper.make_node("Relu", ["p"], ["r"], name="relu1"),
        helper.make_node("MaxUnpool", ["r", "idx"], ["y"], name="unpool1", kernel_shape=[kernel, kernel],
                         strides=[stride, stride]),
    ])


def resize(mode: str = "linear", transform: str = "half_pixel", **attrs: object) -> onnx.ModelProto:
    scales = const("scales", np.array([1, 1, 2, 2], dtype=np.float32))
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up1", mode=mode,
                            coordinate_transformation_mode=transform, **attrs)
    return model([node], initializers=[scales])


def qdq(zero_point: np.ndarray, *, axis: int | None = None, scale: np.ndarray | None = None) -> onnx.ModelProto:
    """Activation Q/DQ then a Conv whose weight goes through DequantizeLinear."""
    weight = const("w_q", np.ones((4, 3, 1, 1), dtype=zero_point.dtype))
    scale_w = const("w_scale", scale if scale is not None else np.array(0.1, dtype=np.float32))
    zero_w = const("w_zero", zero_point)
    kwargs = {} if axis is None else {"axis": axis}
    return model([
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="dq_w", **kwargs),
        helper.make_node("Conv", ["xd", "w"], ["y"], name="conv1"),
    ], initializers=[const("x_scale", np.array(0.05, dtype=np.float32)),
                     const("x_zero", np.zeros((), dtype=zero_point.dtype)), weight, scale_w, zero_w])
