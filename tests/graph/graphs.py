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


def resize(mode: str = "linear", transform: str = "half_pixel", *, scales: Sequence[float] = (1, 1, 2, 2),
           **attrs: object) -> onnx.ModelProto:
    factors = const("scales", np.array(scales, dtype=np.float32))
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up1", mode=mode,
                            coordinate_transformation_mode=transform, **attrs)
    return model([node], initializers=[factors])


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


def _conv_block(prefix: str, source: str, out: str, weight: str) -> list[onnx.NodeProto]:
    return [helper.make_node("Conv", [source, weight], [f"{prefix}_c"], name=f"{prefix}_conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"{prefix}_c"], [f"{prefix}_r"], name=f"{prefix}_relu"),
            helper.make_node("Add", [f"{prefix}_r", f"{prefix}_c"], [out], name=f"{prefix}_add")]


def _branch(nodes: list[onnx.NodeProto], out: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, f"{out}_graph", [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])


def _weights() -> list[onnx.TensorProto]:
    rng = np.random.default_rng(0)
    return [const(name, (rng.standard_normal(shape) * 0.3).astype(np.float32))
            for name, shape in (("w0", (4, 3, 3, 3)), ("w1", (4, 4, 3, 3)), ("w2", (4, 4, 3, 3)))]


def _control_model(nodes: Sequence[onnx.NodeProto], initializers: Sequence[onnx.TensorProto] = (),
                   functions: Sequence[onnx.FunctionProto] = (), domains: Sequence[str] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w0"], ["h"], name="stem", pads=[1, 1, 1, 1]), *nodes], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        initializer=[*_weights(), *initializers])
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def if_model() -> onnx.ModelProto:
    """stem Conv -> If(mean(x) > 0): Conv-Relu-Add of the outer `h` in each branch (read from the outer scope)."""
    return _control_model([
        helper.make_node("ReduceMean", ["x"], ["m"], name="mean", keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["cond"], name="positive"),
        helper.make_node("If", ["cond"], ["y"], name="branch",
                         then_branch=_branch(_conv_block("t", "h", "t_out", "w1"), "t_out"),
                         else_branch=_branch(_conv_block("e", "h", "e_out", "w2"), "e_out")),
    ], [const("zero", np.array(0, np.float32))])


def loop_model(*, nested_if: bool = False) -> onnx.ModelProto:
    """stem Conv -> Loop (2 trips) whose body runs Conv-Relu-Add on its state, optionally then an If in it."""
    body = _conv_block("b", "s_in", "s_mid", "w1")
    if nested_if:
        body.append(helper.make_node(
            "If", ["c_in"], ["s_out"], name="inner_if",
            then_branch=_branch([helper.make_node("Relu", ["s_mid"], ["ti"], name="inner_relu")], "ti"),
            else_branch=_branch([helper.make_node("Conv", ["s_mid", "w2"], ["ei"], name="inner_conv",
                                                  pads=[1, 1, 1, 1])], "ei")))
    else:
        body.append(helper.make_node("Identity", ["s_mid"], ["s_out"], name="b_state"))
    body.append(helper.make_node("Identity", ["c_in"], ["c_out"], name="b_cond"))
    graph = helper.make_graph(body, "body", [
        helper.make_tensor_value_info("i", TensorProto.INT64, []),
        helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("s_in", TensorProto.FLOAT, None)], [
        helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("s_out", TensorProto.FLOAT, None)])
    return _control_model([helper.make_node("Loop", ["trips", "go", "h"], ["y"], name="loop", body=graph)],
                          [const("trips", np.array(2, np.int64)), const("go", np.array(True))])


def scan_model() -> onnx.ModelProto:
    """stem Conv -> Scan over the batch axis, the body running Conv-Relu-Add on each (unsqueezed) slice."""
    body = [helper.make_node("Unsqueeze", ["slice", "axis0"], ["slice4"], name="s_unsqueeze"),
            *_conv_block("s", "slice4", "out4", "w1"),
            helper.make_node("Squeeze", ["out4", "axis0"], ["out"], name="s_squeeze"),
            helper.make_node("Identity", ["state_in"], ["state_out"], name="s_state")]
    graph = helper.make_graph(body, "body", [
        helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [1]),
        helper.make_tensor_value_info("slice", TensorProto.FLOAT, [4, 16, 16])], [
        helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1]),
        helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 16, 16])],
        initializer=[const("axis0", np.array([0], np.int64))])
    return _control_model([helper.make_node("Scan", ["state0", "h"], ["state", "y"], name="scan", body=graph,
                                            num_scan_inputs=1)], [const("state0", np.zeros(1, np.float32))])


def function_model(last_op: str = "Add") -> onnx.ModelProto:
    """stem Conv -> a model-local function pkg::ConvRelu(h, w1) holding Conv-Relu-<last_op> (as torch.onnx's
    dynamo exporter emits modules)."""
    body = [helper.make_node("Conv", ["fx", "fw"], ["fc"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["fc"], ["fr"])]
    body.append(helper.make_node("Add", ["fr", "fc"], ["fy"]) if last_op == "Add"
                else helper.make_node(last_op, ["fr"], ["fy"]))
    function = helper.make_function("pkg", "ConvRelu", ["fx", "fw"], ["fy"], body,
                                    [helper.make_opsetid("", 17)])
    return _control_model([helper.make_node("ConvRelu", ["h", "w1"], ["y"], name="block", domain="pkg")],
                          functions=[function], domains=["pkg"])


CONTROL_FLOW = {"if": if_model, "loop": loop_model, "loop_if": lambda: loop_model(nested_if=True),
                "scan": scan_model, "function": function_model}


def in_branch(node: onnx.NodeProto, initializers: Sequence[onnx.TensorProto] = ()) -> onnx.ModelProto:
    """if_model with `node` (reading `h`, writing `t_in`) inside its then branch, before the branch's Conv."""
    model = if_model()
    then = next(a.g for a in model.graph.node[-1].attribute if a.name == "then_branch")
    then.node[0].input[0] = "t_in"
    then.node.insert(0, node)
    then.initializer.extend(initializers)
    return model


def if_same_output_names() -> onnx.ModelProto:
    """if_model with both branches naming their output `out` (valid ONNX: each branch is its own scope)."""
    model = if_model()
    for attr in model.graph.node[-1].attribute:
        attr.g.node[-1].output[0] = "out"
        attr.g.output[0].name = "out"
    return model
