"""The Q/DQ placement lint (deploykit.graph.qdq_fusion) on hand-made graphs: each rule fires on a placement
TensorRT will not fuse, names the node and a fix, and stays quiet on deploykit's TensorRT layout."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.calib.collect import collect_stats
from deploykit.calib.methods import MinMax, amax
from deploykit.calib.qdq import calibration_tensors, qdq_from_ranges
from deploykit.graph.lint import lint_model


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _qdq(tensor: str, scale: str, name: str) -> list[onnx.NodeProto]:
    return [helper.make_node("QuantizeLinear", [tensor, scale, "zero"], [f"{name}_q"], name=f"{name}_Q"),
            helper.make_node("DequantizeLinear", [f"{name}_q", scale, "zero"], [f"{name}_dq"], name=f"{name}_DQ")]


def _scalars(**values: float) -> list[onnx.TensorProto]:
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in values.items()]
    return [*inits, numpy_helper.from_array(np.array(0, np.int8), "zero")]


def _findings(model: onnx.ModelProto, rule: str) -> list[str]:
    return [f.node for f in lint_model(model).findings if f.rule == rule]


def test_dequantize_read_by_a_float_op_is_unfused() -> None:
    model = _graph([*_qdq("input", "s", "x"), helper.make_node("Sigmoid", ["x_dq"], ["output"], name="sigmoid")],
                   _scalars(s=0.02))
    finding = next(f for f in lint_model(model).findings if f.rule == "qdq-unfused-dq")
    assert finding.node == "sigmoid" and finding.severity == "warning" and "--qdq-layout inputs" in finding.fix


def test_concat_of_different_scales_needs_requantization() -> None:
    nodes = [*_qdq("input", "s1", "a"), *_qdq("input", "s2", "b"),
             helper.make_node("Concat", ["a_dq", "b_dq"], ["output"], axis=1, name="concat")]
    assert _findings(_graph(nodes, _scalars(s1=0.02, s2=0.05)), "qdq-concat-scales") == ["concat"]
    nodes = [*_qdq("input", "s1", "a"), *_qdq("input", "s1", "b"),
             helper.make_node("Concat", ["a_dq", "b_dq"], ["output"], axis=1, name="concat")]
    assert not _findings(_graph(nodes, _scalars(s1=0.02)), "qdq-concat-scales")


def _residual(skip_quantized: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (3, 3, 1, 1)).astype(np.int8), "w")
    inits = [*_scalars(s=0.02), weight, numpy_helper.from_array(np.full(3, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(3, np.int8), "wz")]
    nodes = [*_qdq("input", "s", "x"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["w_dq"], axis=0, name="w_DQ"),
             helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], name="conv"),
             helper.make_node("Add", ["y", "x_dq" if skip_quantized else "input"], ["output"], name="add")]
    return _graph(nodes, inits)


def test_residual_add_with_a_float_skip_does_not_fuse() -> None:
    assert _findings(_residual(skip_quantized=False), "qdq-residual-add") == ["add"]
    assert not _findings(_residual(skip_quantized=True), "qdq-residual-add")


def _gated() -> tuple[onnx.ModelProto, dict[str, float]]:
    """conv -> relu -> conv -> relu -> sigmoid gate -> conv, and its calibrated ranges."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["a"], ["b"], name="relu1"),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="conv2"),
             helper.make_node("Relu", ["c"], ["d"], name="relu2"),
             helper.make_node("Sigmoid", ["d"], ["e"], name="gate"),
             helper.make_node("Mul", ["d", "e"], ["f"], name="gated"),
             helper.make_node("Conv", ["f", "w3"], ["output"], name="conv3")]
    model = _graph(nodes, inits)
    inputs = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(2)]
    stats = collect_stats(model, calibration_tensors(model), iter(inputs)).stats
    return model, {name: amax(s, MinMax()) for name, s in stats.items()}


def test_the_onnxruntime_layout_is_flagged_and_the_tensorrt_layout_is_clean() -> None:
    """The inputs+outputs layout puts a Q/DQ before the Sigmoid gate, which TensorRT cannot fuse; the inputs
    layout (TensorRT's) does not."""
    model, ranges = _gated()
    ort_form = qdq_from_ranges(model, ranges, quantize_outputs=True).model
    assert set(_findings(ort_form, "qdq-unfused-dq")) == {"gate", "gated"}
    trt_form = qdq_from_ranges(model, ranges, quantize_outputs=False).model
    assert not [f for f in lint_model(trt_form).findings if f.rule.startswith("qdq-")]


def test_the_float_remainder_of_an_int8_graph_is_said() -> None:
    """A strongly typed TensorRT network runs the ops outside the INT8 ones in the type the ONNX gives them: with
    --int8-float fp32 (the default) that is FP32, and the lint says so and how to change it."""
    from deploykit.graph.lint import float_remainder
    from deploykit.precision.int8_choices import fp16_remainder

    model, ranges = _gated()
    int8 = qdq_from_ranges(model, ranges, quantize_outputs=False).model
    fp32 = float_remainder(int8)
    assert fp32 is not None and (fp32.kind, fp32.int8, fp32.fp32, fp32.fp16) == ("fp32", 3, 4, 0)
    finding = next(f for f in lint_model(int8).findings if f.rule == "int8-float-remainder")
    assert "run all 4 in FP32" in finding.why and "--int8-float fp16" in finding.fix
    half = float_remainder(fp16_remainder(int8, ranges))
    assert half is not None and half.kind == "fp16" and half.int8 == 3
    assert float_remainder(model) is None


def _weight_only(weights: int, *, data: int | None = None) -> onnx.ModelProto:
    """x @ DequantizeLinear(packed weights of type `weights`, block-quantized) -> Relu; with `data`, x is Q/DQ'd to
    that type too."""
    codes = helper.make_tensor("w", weights, [16, 8], np.random.default_rng(0).integers(-8, 8, 128).tolist())
    inits = [codes, numpy_helper.from_array(np.full([1, 8], 0.1, np.float32), "ws")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "ws"], ["wf"], axis=0, block_size=16, name="dq_w")]
    source = "x"
    if data is not None:
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "xs"), helper.make_tensor("xz", data, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q_x"),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dq_x")]
        source = "xd"
    nodes += [helper.make_node("MatMul", [source, "wf"], ["y0"], name="mm"),
              helper.make_node("Relu", ["y0"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_a_weight_only_int4_graph_is_not_called_an_int8_graph_with_nothing_in_int8() -> None:
    """INT4 weight-only MatMul (activations float) read 'INT8 graph: 0 weighted ops in INT8', as if nothing were
    quantized, and 'every op outside INT8 is float32'; a mix of INT8 data and INT4 weights counted as INT8."""
    from deploykit.graph.lint import float_remainder

    findings = {f.rule: f.why for f in lint_model(_weight_only(TensorProto.INT4)).findings}
    assert "1 with INT4 weights only (computing in float)" in findings["int8-float-remainder"]
    assert "0 weighted ops in INT8" not in findings["int8-float-remainder"]
    assert "(INT4 weights only)" in findings["int8-fp32-remainder"]
    weight_only = float_remainder(_weight_only(TensorProto.INT4))
    assert weight_only is not None and weight_only.int8 == 0 and weight_only.to_dict()["quantized_ops"] == {
        "INT4 weights only": 1}
    mixed = float_remainder(_weight_only(TensorProto.INT4, data=TensorProto.INT8))
    assert mixed is not None and mixed.int8 == 0 and mixed.quantized == {"INT8 data, INT4 weights": 1}
    both = float_remainder(_weight_only(TensorProto.INT4, data=TensorProto.INT4))
    assert both is not None and both.quantized == {"INT4": 1} and "1 in INT4" in both.describe()
