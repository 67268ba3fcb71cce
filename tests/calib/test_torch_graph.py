"""deploykit.calib.torch_graph computes what ONNX Runtime computes for the graphs it accepts (the oracle is ORT
with its optimizations off, so every Q/DQ pair is computed as written), and refuses what it does not compute."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from deploykit.calib.torch_graph import TorchGraph, Unsupported, round_ste
from deploykit.evaluate import session_from_onnx


def _scalar(name: str, value: float | int, dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[onnx.ModelProto, np.ndarray]:
    """[pad] -> conv (kernel, stride, dilation, groups, asymmetric pads) -> activation -> Q/DQ (int8 or uint8) ->
    conv with per-channel INT8 weights -> resize -> concat with a head (pooled scale, or min-max normalized as
    saliency models end) -> output."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    channels, size = draw(st.sampled_from([2, 4])), draw(st.integers(5, 11))
    kernel, stride = draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2]))
    group = draw(st.sampled_from([1, channels]))
    pads = draw(st.lists(st.integers(0, 2), min_size=4, max_size=4))
    activation = draw(st.sampled_from(["Relu", "Clip", "Sigmoid", "LeakyRelu"]))
    unsigned = draw(st.booleans()) and activation in ("Relu", "Clip", "Sigmoid")
    mode = draw(st.sampled_from([("linear", "align_corners"), ("linear", "half_pixel"), ("linear", "asymmetric"),
                                 ("linear", "pytorch_half_pixel"), ("nearest", "asymmetric")]))
    scaled = draw(st.booleans())  # Resize by scales rather than sizes
    pad_mode = draw(st.sampled_from(["none", "constant", "reflect", "edge"]))
    head = draw(st.sampled_from(["scale", "minmax"]))
    inits = [numpy_helper.from_array(rng.standard_normal((channels, channels // group, kernel, kernel))
                                     .astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b1"),
             _scalar("lo", 0.0, np.float32), _scalar("hi", 6.0, np.float32),
             _scalar("s", 0.05, np.float32), _scalar("z", 0, np.uint8 if unsigned else np.int8),
             numpy_helper.from_array(rng.integers(-127, 128, (3, channels, 1, 1)).astype(np.int8), "w2q"),
             numpy_helper.from_array(rng.uniform(0.001, 0.01, 3).astype(np.float32), "w2s"),
             numpy_helper.from_array(np.zeros(3, np.int8), "w2z"),
             numpy_helper.from_array(np.array([1, 3, size + 3, size + 1], np.int64), "sizes"),
             numpy_helper.from_array(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array([1, 1, 2, 1.5], np.float32), "scales"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "spatial"), _scalar("eps", 1e-3, np.float32)]
    act_inputs = {"Clip": ["a", "lo", "hi"]}.get(activation, ["a"])
    padded = [] if pad_mode == "none" else [helper.make_node("Pad", ["x", "pads"], ["xp"], mode=pad_mode)]
    heads = {"scale": [helper.make_node("GlobalAveragePool", ["u"], ["g"]), helper.make_node("Mul", ["u", "g"], ["m"])],
             "minmax": [helper.make_node("ReduceMin", ["u", "spatial"], ["lo_u"], keepdims=1),
                        helper.make_node("ReduceMax", ["u", "spatial"], ["hi_u"], keepdims=1),
                        helper.make_node("Sub", ["u", "lo_u"], ["num"]),
                        helper.make_node("Sub", ["hi_u", "lo_u"], ["den"]),
                        helper.make_node("Add", ["den", "eps"], ["den_eps"]),
                        helper.make_node("Div", ["num", "den_eps"], ["m"])]}[head]
    nodes = [*padded, helper.make_node("Conv", ["xp" if padded else "x", "w1", "b1"], ["a"],
                                       kernel_shape=[kernel, kernel], strides=[stride] * 2,
                                       dilations=[dilation] * 2, group=group, pads=pads),
             helper.make_node(activation, act_inputs, ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["rd"]),
             helper.make_node("DequantizeLinear", ["w2q", "w2s", "w2z"], ["w2"], axis=0),
             helper.make_node("Conv", ["rd", "w2"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Resize", ["c", "", "scales", ""] if scaled else ["c", "", "", "sizes"], ["u"],
                              mode=mode[0],
                              coordinate_transformation_mode=mode[1],
                              **({"nearest_mode": "floor"} if mode[0] == "nearest" else {})),
             *heads,
             helper.make_node("Concat", ["u", "m"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, None, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, None, None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model, rng.standard_normal((1, channels, size * 2, size * 2)).astype(np.float32)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_the_torch_run_agrees_with_onnx_runtime(case: tuple[onnx.ModelProto, np.ndarray]) -> None:
    model, x = case
    try:
        expected = session_from_onnx(model.SerializeToString(), optimization="disable").run(None, {"x": x})[0]
    except Exception:  # a geometry ORT refuses (kernel larger than the padded input) is no case
        return
    with torch.no_grad():
        got = TorchGraph(model).run([torch.from_numpy(x)])[0].numpy()
    assert got.shape == expected.shape and got.dtype == expected.dtype
    close = np.isclose(got, expected, rtol=1e-4, atol=1e-4)
    # a value on a rounding boundary may round the other way (x / s computed differently): rare, one step
    shown = [(n.op_type, {a.name: helper.get_attribute_value(a) for a in n.attribute}) for n in model.graph.node]
    assert close.mean() >= 0.97, f"{(~close).sum()} of {close.size} differ in {shown} at {x.shape}"


def test_an_operator_it_does_not_compute_is_refused_by_name() -> None:
    graph = helper.make_graph([helper.make_node("NonMaxSuppression", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(Unsupported, match="NonMaxSuppression"):
        TorchGraph(helper.make_model(graph))


def test_rounding_passes_the_gradient_straight_through() -> None:
    x = torch.tensor([0.2, 0.6, 1.5, -2.4], requires_grad=True)
    y = round_ste(x)
    y.sum().backward()
    assert y.tolist() == [0.0, 1.0, 2.0, -2.0]  # half to even, as ONNX's QuantizeLinear
    assert x.grad is not None and x.grad.tolist() == [1.0, 1.0, 1.0, 1.0]
