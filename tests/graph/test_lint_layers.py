"""Rules on what TensorRT's layers take (GridSample, Q/DQ types, UINT8 inside the network, TopK's K, pooling),
checked three ways: deploykit's lint, the tensorrt double's parser, and the rule of NVIDIA's source each case names
(onnx-tensorrt 10.1-GA importers, NvInfer.h / NvInferRuntimeBase.h v10.16 and v11.1; see the rules' docstrings)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from deploykit.graph.lint import lint_model
from tests.fakes.tensorrt_double import make_tensorrt
from tests.fakes.tensorrt_double._state import Logger
from tests.graph import graphs

F, H, U8 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8


def double_parses(model: onnx.ModelProto, profile: str = "11") -> bool:
    trt = make_tensorrt(profile)
    network = trt.Builder(Logger()).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    return bool(trt.OnnxParser(network, Logger()).parse(model.SerializeToString()))


def lint_errors(model: onnx.ModelProto) -> set[str]:
    return {f.rule for f in lint_model(model).errors}


def io_model(nodes: list[onnx.NodeProto], inputs: list[tuple[str, int, list[int | str]]],
             outputs: list[tuple[str, int, list[int | str]]], initializers: list[onnx.TensorProto] | None = None,
             opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def grid_sample(rank: int = 4, opset: int = 16, **attrs: object) -> onnx.ModelProto:
    spatial = [8] * (rank - 2)
    return io_model([helper.make_node("GridSample", ["x", "grid"], ["y"], name="gs", **attrs)],
                    [("x", F, [1, 3, *spatial]), ("grid", F, [1, *spatial, rank - 2])],
                    [("y", F, [1, 3, *spatial])], opset=opset)


def quantize(data: int, scale: int, opset: int) -> onnx.ModelProto:
    scale_np = np.array(0.1, helper.tensor_dtype_to_np_dtype(scale))
    return io_model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                     helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
                    [("x", data, [1, 3, 8, 8])], [("y", scale, [1, 3, 8, 8])],
                    [graphs.const("s", scale_np), graphs.const("z", np.array(0, np.int8))], opset=opset)


def uint8_into(op: str) -> onnx.ModelProto:
    node = (helper.make_node("Cast", ["x"], ["y"], to=F, name="to_float") if op == "Cast" else
            helper.make_node(op, ["x", "x"] if op == "Add" else ["x"], ["y"], name="reader"))
    out = F if op == "Cast" else U8
    return io_model([node], [("x", U8, [1, 3, 8, 8])], [("y", out, [1, 3, 8, 8])])


def cast_then(first_to: int, op: str) -> onnx.ModelProto:
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=first_to, name="cast"),
             helper.make_node(op, ["c"], ["y"], name="after")]
    return io_model(nodes, [("x", F, [1, 3, 8, 8])], [("y", first_to, [1, 3, 8, 8])])


def dequantized_bias() -> onnx.ModelProto:
    return io_model([helper.make_node("DequantizeLinear", ["b", "s"], ["bd"], name="dq_bias"),
                     helper.make_node("Add", ["x", "bd"], ["y"], name="add")],
                    [("x", F, [1, 3, 8, 8])], [("y", F, [1, 3, 8, 8])],
                    [graphs.const("b", np.ones((1, 3, 1, 1), np.int32)), graphs.const("s", np.array(0.1, np.float32))])


def int16_zero_point() -> onnx.ModelProto:
    """ONNX Runtime's 16-bit QDQ (opset 21): TensorRT quantizes to INT8 instead, with a warning."""
    return io_model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                     helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
                    [("x", F, [1, 3, 8, 8])], [("y", F, [1, 3, 8, 8])],
                    [graphs.const("s", np.array(0.1, np.float32)), graphs.const("z", np.array(0, np.int16))], opset=21)


def node_case(node: onnx.NodeProto, initializers: list[onnx.TensorProto], inputs: int = 1) -> onnx.ModelProto:
    names = [("x", F, graphs.IMAGE), ("a", TensorProto.INT64, [])][:inputs]
    return io_model([node], names, [(node.output[0], F, ["n", "c", "h", "w"])], initializers)


def mod(elem: int, fmod: int) -> onnx.ModelProto:
    return io_model([helper.make_node("Mod", ["x", "x"], ["y"], name="mod", fmod=fmod)],
                    [("x", elem, [1, 3, 8, 8])], [("y", elem, [1, 3, 8, 8])])


def dequantize(data: np.ndarray | None, scale: np.ndarray, opset: int = 18, **attrs: object) -> onnx.ModelProto:
    """DequantizeLinear of a constant `data`, or (None) of an INT8 network input, into y."""
    inits = [graphs.const("s", scale)] + ([graphs.const("d", data)] if data is not None else [])
    inputs = [] if data is not None else [("d", TensorProto.INT8, [1, 3, 8, 8])]
    shape = list(data.shape) if data is not None else [1, 3, 8, 8]
    return io_model([helper.make_node("DequantizeLinear", ["d", "s"], ["dq"], name="dq", **attrs),
                     helper.make_node("Identity", ["dq"], ["y"], name="out")], inputs, [("y", F, shape)], inits, opset)


def int4_weights(shape: tuple[int, ...], scale: tuple[int, ...], zero: tuple[int, ...] | None = None,
                 **attrs: object) -> onnx.ModelProto:
    """DequantizeLinear (opset 21) of constant INT4 weights with an INT4 zero point of 0s (`zero`: its shape, else the
    scale's), so TensorRT's parser quantizes to INT4."""
    zero = scale if zero is None else zero
    inits = [helper.make_tensor("d", TensorProto.INT4, shape, np.zeros(shape, np.int8).ravel().tolist()),
             graphs.const("s", np.full(scale, 0.1, np.float32)),
             helper.make_tensor("z", TensorProto.INT4, zero, np.zeros(zero, np.int8).ravel().tolist())]
    return io_model([helper.make_node("DequantizeLinear", ["d", "s", "z"], ["dq"], name="dq", **attrs),
                     helper.make_node("Identity", ["dq"], ["y"], name="out")], [], [("y", F, list(shape))], inits, 21)


def quantize_to(output_dtype: int, zero: np.ndarray | None = None) -> onnx.ModelProto:
    """QuantizeLinear with output_dtype (opset 21), with or without a zero point, then DequantizeLinear."""
    inits = [graphs.const("s", np.array(0.1, np.float32))] + ([graphs.const("z", zero)] if zero is not None else [])
    inputs = ["x", "s", "z"] if zero is not None else ["x", "s"]
    return io_model([helper.make_node("QuantizeLinear", inputs, ["q"], name="q", output_dtype=output_dtype),
                     helper.make_node("DequantizeLinear", ["q", *inputs[1:]], ["y"], name="dq")],
                    [("x", F, [1, 3, 8, 8])], [("y", F, [1, 3, 8, 8])], inits, opset=21)


# name -> (model, the rule the source states: True when TensorRT takes the model)
CASES = {
    "gridsample-4d": (grid_sample(), True),
    "gridsample-4d-align-corners-border": (grid_sample(align_corners=1, padding_mode="border"), True),
    "gridsample-5d": (grid_sample(rank=5, opset=20), False),  # NvInfer.h IGridSampleLayer: rank 4
    "gridsample-linear-opset20": (grid_sample(opset=20, mode="linear"), True),  # parses; imported as nearest
    "q-half-scale-float-input-opset23": (quantize(F, H, 23), False),  # IQuantizeLayer, strongly typed
    "q-half-scale-float-input-opset18": (quantize(F, H, 18), True),  # the parser casts the scale below 19
    "q-half-scale-half-input-opset23": (quantize(H, H, 23), True),
    "q-float-scale-half-input-opset23": (quantize(H, F, 23), True),  # only a HALF/BF16 scale must match
    "uint8-into-add": (uint8_into("Add"), False),  # NvInferRuntimeBase.h kUINT8: I/O only
    "uint8-into-relu": (uint8_into("Relu"), False),
    "uint8-into-cast": (uint8_into("Cast"), True),
    "cast-uint8-then-relu": (cast_then(U8, "Relu"), False),
    "cast-uint8-then-identity-out": (cast_then(U8, "Identity"), False),
    "cast-half-then-relu": (cast_then(H, "Relu"), True),
    "cast-int16": (cast_then(TensorProto.INT16, "Identity"), False),  # Cast importer: "Unsupported cast!"
    "cast-int32": (cast_then(TensorProto.INT32, "Identity"), True),
    "dequantize-int32-bias": (dequantized_bias(), False),  # IDequantizeLayer: INT8/FP8/INT4/FP4 input
    "int16-zero-point": (int16_zero_point(), True),  # "TensorRT will use INT8 instead"
    "topk-k-3840": (node_case(helper.make_node("TopK", ["x", "k"], ["y", "i"], name="t"),
                              [graphs.const("k", np.array([3840], np.int64))]), True),  # "up to 3840"
    "topk-k-3841": (node_case(helper.make_node("TopK", ["x", "k"], ["y", "i"], name="t"),
                              [graphs.const("k", np.array([3841], np.int64))]), False),
    "topk-unsorted": (node_case(helper.make_node("TopK", ["x", "k"], ["y", "i"], name="t", sorted=0),
                                [graphs.const("k", np.array([2], np.int64))]), True),  # `sorted` never read
    "maxpool-dilated": (node_case(helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2],
                                                   dilations=[2, 2]), []), True),  # dilations never read
    "cumsum-axis-input": (node_case(helper.make_node("CumSum", ["x", "a"], ["y"], name="c"), [], inputs=2), False),
    "dropout-training": (node_case(helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="d"),
                                   [graphs.const("r", np.array(0.5, np.float32)), graphs.const("t", np.array(True))]),
                         False),
    "reducemax-axes-input": (node_case(helper.make_node("ReduceMax", ["x", "a"], ["y"], name="r"), [], inputs=2),
                             False),  # reduceTensor: "Axis input must be an initializer!"
    "reducemax-axes-constant": (node_case(helper.make_node("ReduceMax", ["x", "a"], ["y"], name="r"),
                                          [graphs.const("a", np.array([2, 3], np.int64))]), True),
    "pad-axes-input": (io_model([helper.make_node("Pad", ["x", "p", "", "a"], ["y"], name="pad")],
                                [("x", F, graphs.IMAGE), ("a", TensorProto.INT64, [2])], [("y", F, graphs.IMAGE)],
                                [graphs.const("p", np.ones(4, np.int64))]), False),
    "weight-scales-per-input-channel": (io_model(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["wd"], name="dq_w", axis=0),
         helper.make_node("Conv", ["x", "wd"], ["y"], name="conv")], [("x", F, [1, 3, 8, 8])], [("y", F, [1, 4, 8, 8])],
        [graphs.const("w", np.ones((4, 3, 1, 1), np.int8)), graphs.const("s", np.full(3, 0.1, np.float32))]), False),
    "mod-float-fmod0": (mod(F, 0), False),  # Mod importer: fmod=0 takes INT32/INT64 only
    "mod-float-fmod1": (mod(F, 1), True),
    "mod-int64-fmod0": (mod(TensorProto.INT64, 0), True),
    "mod-int32-fmod1": (mod(TensorProto.INT32, 1), True),
    # IDequantizeLayer: per-channel only for input rooted at an IConstantLayer
    "dequantize-activation-per-channel": (dequantize(None, np.full(3, 0.1, np.float32), axis=1), False),
    "dequantize-activation-per-tensor": (dequantize(None, np.array(0.1, np.float32)), True),
    "dequantize-weights-per-channel": (dequantize(np.ones((4, 3, 1, 1), np.int8), np.full(4, 0.1, np.float32),
                                                  axis=0), True),
    # IDequantizeLayer: block quantization for FP4, FP8, INT4 input only
    "dequantize-int8-blocks": (dequantize(np.ones((4, 8), np.int8), np.full((4, 2), 0.1, np.float32), opset=21,
                                          axis=1, block_size=4), False),
    "dequantize-int4-blocks": (io_model(  # INT4 blocks of a network input: block, not per-channel, so accepted
        [helper.make_node("DequantizeLinear", ["d", "s"], ["dq"], name="dq", axis=1, block_size=4),
         helper.make_node("Identity", ["dq"], ["y"], name="out")], [("d", TensorProto.INT4, [4, 8])],
        [("y", F, [4, 8])], [graphs.const("s", np.full((4, 2), 0.1, np.float32))], opset=21), True),
    # NvInfer.h IQuantizeLayer/IDequantizeLayer: block scales of rank <= 2, the input's shape but in one axis (the
    # last or second to last); QuantDequantLinearHelper: "Only a single blocking dimension is allowed.", "Inferred
    # block size is not an integer.", "Invalid rank for the scale tensor", "Cannot have scale with no coefficients.",
    # "The scale and zero point must have the same volume.", "4-bit quantization requies an even number of elements."
    "int4-blocks-last-axis": (int4_weights((8, 16), (8, 4), axis=1, block_size=4), True),
    "int4-blocks-first-axis": (int4_weights((16, 8), (4, 8), axis=0, block_size=4), True),
    "int4-blocks-rank-3": (int4_weights((2, 8, 16), (2, 8, 4), axis=2, block_size=4), False),
    "int4-blocks-rank-3-scale-input": (io_model(  # the parser reads a computed scale's dimensions as well
        [helper.make_node("DequantizeLinear", ["d", "s"], ["dq"], name="dq", axis=2, block_size=4),
         helper.make_node("Identity", ["dq"], ["y"], name="out")], [("d", TensorProto.INT4, [2, 8, 16]),
                                                                      ("s", F, [2, 8, 4])],
        [("y", F, [2, 8, 16])], opset=21), False),
    "int4-blocks-two-axes": (int4_weights((8, 16), (4, 4), axis=1, block_size=4), False),
    "int4-blocks-not-dividing": (int4_weights((8, 18), (8, 5), axis=1, block_size=4), False),
    "int4-blocks-other-size": (int4_weights((8, 9), (8, 3), axis=1, block_size=4), True),  # blocks of 3: a warning
    "int4-scale-rank-2-of-4": (int4_weights((4, 4, 2, 2), (4, 4), axis=1), False),
    "int4-zero-point-size": (int4_weights((4, 8), (4,), (2,), axis=0), False),
    "int4-odd-weights": (int4_weights((3, 3), ()), False),
    "int4-even-weights": (int4_weights((3, 4), ()), True),
    "int8-empty-scale": (dequantize(np.ones((4, 3), np.int8), np.ones(0, np.float32), axis=0), False),
    "q-int4-odd-activation": (io_model(
        [helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q", output_dtype=TensorProto.INT4),
         helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")], [("x", F, [1, 3, 3, 3])],
        [("y", F, [1, 3, 3, 3])], [graphs.const("s", np.array(0.1, np.float32))], opset=21), False),
    "q-int4-even-activation": (quantize_to(TensorProto.INT4), True),
    # IQuantizeLayer: FLOAT, HALF or BF16 input; ONNX also quantizes INT32
    "q-of-int32": (io_model([helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q"),
                             helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")],
                            [("x", TensorProto.INT32, [1, 3, 8, 8])], [("y", F, [1, 3, 8, 8])],
                            [graphs.const("s", np.array(0.1, np.float32))], opset=21), False),
    # QuantDequantLinearHelper: output_dtype INT8/FP8/INT4/FP4 without a zero point, else the zero point's type
    "q-output-dtype-int8": (quantize_to(TensorProto.INT8), True),
    "q-output-dtype-uint8": (quantize_to(U8), False),
    "q-output-dtype-uint8-zero-uint8": (quantize_to(U8, np.array(0, np.uint8)), True),  # as INT8, with a warning
    # Resize importer, canUseNDResize: linear scales only the last 3 axes, cubic the last 2
    "resize-linear-scaling-channels": (graphs.resize("linear", scales=[1, 2, 2, 2]), True),
    "resize-linear-scaling-batch": (graphs.resize("linear", scales=[2, 1, 2, 2]), False),
    "resize-cubic-scaling-channels": (graphs.resize("cubic", scales=[1, 2, 2, 2]), False),
    "resize-cubic-spatial": (graphs.resize("cubic"), True),
    "layernorm-mean-output": (node_case(helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean"], name="ln"),
                                        [graphs.const("s", np.ones(3, np.float32))]), False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lint_double_and_source_agree(name: str) -> None:
    model, takes = CASES[name]
    assert (not lint_errors(model)) == takes, name
    assert double_parses(model) == takes, name


def test_one_d_pooling_parses_in_both() -> None:
    """poolingHelper unsqueezes a 3-D input and pools it as 2-D (importerUtils.cpp 10.1-GA l.1387-1401)."""
    model = io_model([helper.make_node("AveragePool", ["x"], ["y"], name="p", kernel_shape=[2])],
                     [("x", F, [1, 3, 8])], [("y", F, [1, 3, 7])])
    assert not lint_errors(model) and double_parses(model)


def test_warnings_for_what_parses_but_computes_otherwise() -> None:
    assert "gridsample-mode" in {f.rule for f in lint_model(grid_sample(opset=20, mode="linear")).warnings}
    assert "pool-dilation" in {f.rule for f in lint_model(CASES["maxpool-dilated"][0]).warnings}
    assert "qdq-uint8" in {f.rule for f in lint_model(int16_zero_point()).warnings}
    assert "qdq-block-size" in {f.rule for f in lint_model(CASES["int4-blocks-other-size"][0]).warnings}
    assert "int16" in next(f.why for f in lint_model(int16_zero_point()).warnings if f.node == "q").lower()


def test_uint8_inside_names_each_reader_once() -> None:
    found = [f for f in lint_model(uint8_into("Add")).errors if f.rule == "uint8-inside"]
    assert [f.node for f in found] == ["reader"] and "Cast" in found[0].fix


def test_the_double_computes_what_the_importer_builds() -> None:
    """Dilations dropped from pools and an unknown GridSample mode as nearest, as the importer builds them."""
    from tests.fakes.tensorrt_double._parse import _as_imported
    pool = _as_imported(CASES["maxpool-dilated"][0])
    assert [a.name for a in pool.graph.node[0].attribute] == ["kernel_shape"]
    sample = _as_imported(grid_sample(opset=20, mode="linear"))
    assert helper.get_attribute_value(sample.graph.node[0].attribute[0]) == b"nearest"
