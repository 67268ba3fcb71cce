"""deploykit's TensorRT lint on hand-made graphs: each rule fires on what TensorRT rejects, names the node and
offers a fix, and stays quiet on what TensorRT parses. Cross-checked against the tensorrt double's parser."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from deploykit.graph.lint import Finding, LintReport, lint_model
from tests.fakes.tensorrt_double import make_tensorrt
from tests.fakes.tensorrt_double._state import Logger
from tests.fixtures.user_models import tiny_segmenter
from tests.graph import graphs


def _rules(report: LintReport, severity: str = "error") -> dict[str, Finding]:
    return {f.rule: f for f in report.findings if f.severity == severity}


def _exported() -> onnx.ModelProto:
    buffer = io.BytesIO()
    axes = {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}}
    torch.onnx.export(tiny_segmenter(), (torch.randn(1, 3, 64, 64),), buffer, dynamo=False,  # type: ignore[arg-type]
                      opset_version=18, input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_plain_export_is_clean() -> None:
    report = lint_model(_exported())
    assert report.ok and report.findings == [] and report.opset == 18


def test_unsupported_unknown_and_custom_ops() -> None:
    model = graphs.model([
        helper.make_node("Unique", ["x"], ["u"], name="uniq"),
        helper.make_node("FancyOp", ["x"], ["f"], name="fancy"),
        helper.make_node("FusedConv", ["x"], ["y"], name="fused", domain="com.microsoft"),
    ], outputs=("y",))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    report = lint_model(model)
    errors = _rules(report)
    assert errors["unsupported-op"].node == "uniq" and "after the engine" in errors["unsupported-op"].fix
    assert errors["custom-domain"].node == "fused" and "ONNX Runtime" in errors["custom-domain"].fix
    assert _rules(report, "warning")["unknown-op"].node == "fancy"


@pytest.mark.parametrize("opset", [8, 25])
def test_opset_outside_9_to_24(opset: int) -> None:
    report = lint_model(graphs.model([helper.make_node("Relu", ["x"], ["y"])], opset=opset))
    assert "--opset 18" in _rules(report)["opset"].fix


def test_unpooling_rewritable_is_a_warning_overlapping_is_an_error() -> None:
    fixable = lint_model(graphs.unpooling())
    assert fixable.ok
    assert {f.node for f in fixable.findings if f.rule == "unpooling"} == {"pool1", "unpool1"}
    assert "build-engine rewrites it" in fixable.findings[0].fix
    overlapping = lint_model(graphs.unpooling(kernel=3, stride=2))
    assert {f.node for f in overlapping.errors} == {"pool1", "unpool1"}
    assert "unpool=mask" in overlapping.errors[0].fix


def test_pooling_restrictions() -> None:
    """onnx-tensorrt's poolingHelper ignores dilations (a warning: the engine pools undilated) and pools a 1-D
    MaxPool/AveragePool as 2-D (clean); LpPool has no such expansion (an error)."""
    model = graphs.model([
        helper.make_node("MaxPool", ["x"], ["p"], name="dilated", kernel_shape=[2, 2], dilations=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["flat"], name="to_1d"),
        helper.make_node("AveragePool", ["flat"], ["a"], name="one_d", kernel_shape=[2]),
        helper.make_node("LpPool", ["a"], ["y"], name="lp_one_d", kernel_shape=[2]),
    ], initializers=[graphs.const("shape", np.array([0, 3, -1], np.int64))])
    report = lint_model(model)
    assert _rules(report, "warning")["pool-dilation"].node == "dilated"
    assert [(f.rule, f.node) for f in report.errors] == [("pool-rank", "lp_one_d")]


@pytest.mark.parametrize("kwargs,rule,severity", [
    ({"mode": "bicubic"}, "resize-mode", "error"),
    ({"transform": "tf_crop_and_resize"}, "resize-coordinates", "error"),
    ({"antialias": 1}, "resize-antialias", "warning"),
    ({"keep_aspect_ratio_policy": "not_larger"}, "resize-aspect", "warning"),
])
def test_resize_restrictions(kwargs: dict[str, object], rule: str, severity: str) -> None:
    """onnx-tensorrt's Resize importer refuses other coordinate transforms but never reads antialias or
    keep_aspect_ratio_policy: those build, with a different result (warnings, not errors)."""
    report = lint_model(graphs.resize(**kwargs))  # type: ignore[arg-type]
    assert _rules(report, severity)[rule].node == "up1"


def test_cubic_resize_is_clean() -> None:
    """The parser imports mode "cubic" as InterpolationMode::kCUBIC ("Supports bicubic (2D) interpolation",
    NvInfer.h), though operators.md lists nearest and linear only."""
    assert lint_model(graphs.resize(mode="cubic")).findings == []


@pytest.mark.parametrize("transform", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"])
def test_supported_resize_is_clean(transform: str) -> None:
    assert lint_model(graphs.resize(transform=transform)).findings == []


def test_qdq_restrictions() -> None:
    asymmetric = _rules(lint_model(graphs.qdq(np.array(3, dtype=np.int8))))
    assert asymmetric["qdq-zero-point"].node == "dq_w" and "symmetric" in asymmetric["qdq-zero-point"].fix
    unsigned = lint_model(graphs.qdq(np.array(0, dtype=np.uint8)))
    assert {(f.node, f.severity) for f in unsigned.findings if f.rule == "qdq-uint8"} == {("q_in", "warning"),
                                                                                         ("dq_w", "error")}
    dead = _rules(lint_model(graphs.qdq(np.array(0, dtype=np.int8), scale=np.array(0.0, np.float32))))
    assert dead["qdq-scale"].node == "dq_w" and dead["qdq-scale"].severity == "error"
    wrong_axis = lint_model(graphs.qdq(np.zeros(3, dtype=np.int8), axis=1, scale=np.full(3, 0.1, np.float32)))
    assert _rules(wrong_axis)["qdq-weight-axis"].node == "dq_w"
    right = lint_model(graphs.qdq(np.zeros(4, dtype=np.int8), axis=0, scale=np.full(4, 0.1, np.float32)))
    assert right.ok and [f.rule for f in right.findings] == ["int8-fp32-remainder"]  # info: a float32 rest


def test_int8_notes_resize_and_grouped_conv() -> None:
    scale, zero = graphs.const("s", np.array(0.1, np.float32)), graphs.const("z", np.array(0, np.int8))
    weight = graphs.const("wq", np.ones((3, 1, 3, 3), np.int8))
    model = graphs.model([
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], name="dq_w"),
        helper.make_node("Conv", ["xd", "w"], ["c"], name="depthwise", group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["xd", "", "scales"], ["y"], name="up", mode="linear"),
    ], initializers=[scale, zero, weight, graphs.const("scales", np.array([1, 1, 2, 2], np.float32))])
    notes = _rules(lint_model(model), "info")
    assert notes["int8-resize"].node == "up" and notes["int8-grouped-conv"].node == "depthwise"


def test_other_node_restrictions() -> None:
    """TopK: the importer never reads `sorted` (sorted output is a valid sorted=0 result: a note), and NvInfer.h
    supports K "up to 3840", 3840 included."""
    model = graphs.model([
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", sorted=0),
        helper.make_node("ScatterND", ["x", "idx", "v"], ["y"], name="scatter", reduction="add"),
    ], initializers=[graphs.const("k", np.array([4], np.int64)), graphs.const("idx", np.zeros((1, 1), np.int64))])
    report = lint_model(model)
    assert [(f.rule, f.node) for f in report.errors] == [("scatternd-reduction", "scatter")]
    assert _rules(report, "info")["topk-sorted"].node == "topk"
    for k, flagged in ((3840, False), (3841, True)):
        model.graph.initializer[0].CopyFrom(graphs.const("k", np.array([k], np.int64)))
        assert ("topk-k" in _rules(lint_model(model))) == flagged


def test_int64_beyond_int32_warns_except_slice_sentinels() -> None:
    big = np.array([2**40], dtype=np.int64)
    sentinel = np.array([np.iinfo(np.int64).max], dtype=np.int64)
    model = graphs.model([
        helper.make_node("Slice", ["x", "zero", "end", "axis"], ["s"], name="slice"),
        helper.make_node("Gather", ["s", "far"], ["y"], name="gather", axis=0),
    ], initializers=[graphs.const("zero", np.array([0], np.int64)), graphs.const("end", sentinel),
                     graphs.const("axis", np.array([2], np.int64)), graphs.const("far", big)])
    warnings = [f for f in lint_model(model).findings if f.rule == "int64-range"]
    assert [f.node for f in warnings] == ["gather"]


def test_double_io_warns() -> None:
    model = graphs.model([helper.make_node("Relu", ["x"], ["y"])], elem=TensorProto.DOUBLE)
    assert "double" in _rules(lint_model(model), "warning")


def test_report_json_shape() -> None:
    data = lint_model(graphs.resize(transform="tf_crop_and_resize"), source="m.onnx").to_dict()
    assert data["ok"] is False and data["errors"] == 1 and data["source"] == "m.onnx"
    assert set(data["findings"][0]) == {"rule", "severity", "node", "op", "why", "fix"}


def _function_call_with_inputs(count: int) -> onnx.ModelProto:
    model = graphs.function_model()
    del model.graph.node[-1].input[count:]
    return model


@pytest.mark.parametrize("name,model", [
    ("cubic", graphs.resize(mode="cubic")), ("unpool", graphs.unpooling()),
    ("crop", graphs.resize(transform="tf_crop_and_resize")), ("antialias", graphs.resize(antialias=1)),
    ("from-uint8", graphs.model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32, name="c")],
                                elem=TensorProto.UINT8)),
    ("uint8-to-float", graphs.model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT, name="c")],
                                    elem=TensorProto.UINT8)),
    ("per-channel-activation", graphs.model([
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"], name="dq")],
        initializers=[graphs.const("s", np.full(3, 0.1, np.float32)), graphs.const("z", np.zeros(3, np.int8))])),
    ("uint8-input", graphs.model([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], name="dq")],
                                 elem=TensorProto.UINT8, initializers=[graphs.const("s", np.array(0.1, np.float32)),
                                                                       graphs.const("z", np.array(0, np.uint8))])),
    ("bitshift", graphs.model([helper.make_node("BitShift", ["x", "x"], ["y"], direction="LEFT", name="b")])),
    ("col2im", graphs.model([helper.make_node("Col2Im", ["x", "shape", "shape"], ["y"], name="c")], opset=18,
                            initializers=[graphs.const("shape", np.array([2, 2], np.int64))])),
    ("asymmetric", graphs.qdq(np.array(3, dtype=np.int8))),
    ("unique", graphs.model([helper.make_node("Unique", ["x"], ["y"], name="u")])),
    ("opset8", graphs.model([helper.make_node("Relu", ["x"], ["y"])], opset=8)),
    ("linear", graphs.resize()), ("qdq", graphs.qdq(np.array(0, dtype=np.int8))),
    ("uint8", graphs.qdq(np.array(0, dtype=np.uint8))),
    ("zero-scale", graphs.qdq(np.array(0, dtype=np.int8), scale=np.array(0.0, np.float32))),
    ("uint8-activations", graphs.model([
        helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s"], ["y"], name="dq")],
        initializers=[graphs.const("s", np.array(0.1, np.float32))])),
    # control flow and local functions: TensorRT imports their bodies node by node (deploykit.graph.lint)
    *((name, graphs.CONTROL_FLOW[name]()) for name in sorted(graphs.CONTROL_FLOW)),
    ("crop-in-branch", graphs.in_branch(
        helper.make_node("Resize", ["h", "", "scales"], ["t_in"], name="up_in_branch",
                         coordinate_transformation_mode="tf_crop_and_resize"),
        [graphs.const("scales", np.ones(4, np.float32))])),
    ("unique-in-branch", graphs.in_branch(helper.make_node("Unique", ["h"], ["t_in"], name="u"))),
    ("if-same-output-names", graphs.if_same_output_names()),
    ("function-fewer-inputs", _function_call_with_inputs(1)),
])
def test_lint_agrees_with_the_double_parser(name: str, model: onnx.ModelProto) -> None:
    """Lint (before any rewrite) reports a problem exactly where the independent parser double rejects."""
    trt = make_tensorrt("11")
    network = trt.Builder(Logger()).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parsed = trt.OnnxParser(network, Logger()).parse(model.SerializeToString())
    flagged = any(f.severity == "error" or f.rule == "unpooling" for f in lint_model(model).findings)
    assert flagged == (not parsed), name


@pytest.mark.parametrize("name", sorted(graphs.CONTROL_FLOW))
def test_control_flow_and_local_functions_are_clean(name: str) -> None:
    """A call of a model-local function is not a custom op: TensorRT's parser imports its body."""
    assert lint_model(graphs.CONTROL_FLOW[name]()).findings == []


def test_rules_apply_inside_branches_and_function_bodies() -> None:
    crop = helper.make_node("Resize", ["h", "", "scales"], ["t_in"], name="up_in_branch",
                            coordinate_transformation_mode="tf_crop_and_resize")
    report = lint_model(graphs.in_branch(crop, [graphs.const("scales", np.ones(4, np.float32))]))
    assert [f.node for f in report.errors] == ["up_in_branch"]
    # a constant read inside a body is a constant (CumSum's axis), not a false "must be constant" error
    cumsum = helper.make_node("CumSum", ["h", "axis"], ["t_in"], name="cumsum_in_branch")
    assert lint_model(graphs.in_branch(cumsum, [graphs.const("axis", np.array(1, np.int64))])).errors == []
    assert "function-inputs" in _rules(lint_model(_function_call_with_inputs(1)))


def test_if_branches_sharing_an_output_name() -> None:
    report = lint_model(graphs.if_same_output_names())
    assert "if-output-names" in _rules(report)
    model = graphs.if_same_output_names()  # with a constant condition TensorRT parses one branch only
    model.graph.initializer.append(graphs.const("cond", np.array(True)))
    model.graph.node.remove(next(n for n in model.graph.node if n.name == "positive"))
    assert "if-output-names" not in _rules(lint_model(model))


def test_a_function_named_like_a_standard_operator() -> None:
    """TensorRT dispatches on the op type alone, its own importers first: pkg::Relu would import as Relu."""
    model = graphs.function_model()
    model.functions[0].name = model.graph.node[-1].op_type = "Relu"
    assert _rules(lint_model(model))["function-name"].node == "block"


def test_only_the_branch_a_constant_condition_selects_is_checked() -> None:
    """TensorRT parses only the selected branch of an If whose condition is a build-time constant: an unsupported
    op in the other one is no error, in the selected one it is."""
    for condition, flagged in ((True, True), (False, False)):
        model = graphs.in_branch(helper.make_node("Unique", ["h"], ["t_in"], name="u"))
        model.graph.node.remove(next(n for n in model.graph.node if n.name == "positive"))
        model.graph.initializer.append(graphs.const("cond", np.array(condition)))
        assert ("unsupported-op" in _rules(lint_model(model))) == flagged
        trt = make_tensorrt("11")
        network = trt.Builder(Logger()).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        assert trt.OnnxParser(network, Logger()).parse(model.SerializeToString()) == (not flagged)


def test_a_dynamic_channel_axis_read_by_a_convolution_is_a_warning_build_engine_fixes() -> None:
    """NvInfer.h addConvolutionNd: no wildcard 'C'; build-engine pins it (shapes.pin_channels), so a warning."""
    weights = graphs.const("w", np.ones((2, 1, 3, 3), np.float32))
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="stem")
    dynamic = lint_model(graphs.model([conv], inputs=[("x", ["n", "c", "h", "w"])], initializers=[weights]))
    assert [(f.rule, f.node) for f in dynamic.warnings if f.rule == "dynamic-channels"] == [("dynamic-channels", "x")]
    assert "fixes the axis to 1" in dynamic.warnings[0].fix and "stem" in dynamic.warnings[0].why
    fixed = lint_model(graphs.model([conv], inputs=[("x", ["n", 1, "h", "w"])], initializers=[weights]))
    assert not [f for f in fixed.findings if f.rule == "dynamic-channels"]
