"""Generated graphs of the ops deploykit's exports and INT8/FP16 transforms use (pools, TopK, GridSample, Q/DQ,
Cast), their attributes and types drawn inside and outside TensorRT's limits: deploykit's lint, the tensorrt
double's parser and the source rule (restated here from the citations in the rules' docstrings) give one verdict."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tests.graph import graphs
from tests.graph.test_lint_layers import double_parses, io_model, lint_errors

F, H, U8 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8
Case = tuple[onnx.ModelProto, bool]  # the model, and whether the source rule says TensorRT takes it


@st.composite
def pools(draw: Callable) -> Case:
    op = draw(st.sampled_from(["MaxPool", "AveragePool", "LpPool"]))
    spatial, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[2] * spatial, dilations=[dilation] * spatial)
    dims: list[int | str] = ["n", 3, *["s"] * spatial]
    # poolingHelper: 1-D as 2-D, dilations never read; LpPool: addPoolingNd as is (2-D/3-D)
    return io_model([node], [("x", F, [1, 3, *[8] * spatial])], [("y", F, dims)], opset=19), \
        op != "LpPool" or spatial > 1


@st.composite
def topks(draw: Callable) -> Case:
    k = draw(st.sampled_from([1, 2, 3839, 3840, 3841, 10000]))
    node = helper.make_node("TopK", ["x", "k"], ["y", "i"], axis=-1, sorted=draw(st.integers(0, 1)))
    model = io_model([node], [("x", F, [1, 3, 8, 8])], [("y", F, ["n", "c", "h", "k"])],
                     [graphs.const("k", np.array([k], np.int64))])
    return model, k <= 3840  # NvInfer.h: "only values of K up to 3840 are supported"


@st.composite
def grid_samples(draw: Callable) -> Case:
    opset = draw(st.sampled_from([16, 20]))
    rank = draw(st.sampled_from([4, 5])) if opset >= 20 else 4
    names = ["bilinear", "nearest", "bicubic"] if opset < 20 else ["linear", "nearest", "cubic"]
    spatial = [8] * (rank - 2)
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=draw(st.sampled_from(names)),
                            align_corners=draw(st.integers(0, 1)),
                            padding_mode=draw(st.sampled_from(["zeros", "border", "reflection"])))
    model = io_model([node], [("x", F, [1, 3, *spatial]), ("grid", F, [1, *spatial, rank - 2])],
                     [("y", F, [1, 3, *spatial])], opset=opset)
    return model, rank == 4  # IGridSampleLayer: rank 4


@st.composite
def qdqs(draw: Callable) -> Case:
    opset = draw(st.sampled_from([18, 19, 21, 23]))
    data = draw(st.sampled_from([F, H])) if opset >= 19 else F
    scale_type = draw(st.sampled_from([F, H])) if opset >= 23 else data  # ONNX: one type before opset 23
    zero_np = draw(st.sampled_from([None, np.int8, np.uint8]))
    zero_value = draw(st.sampled_from([0, 3])) if zero_np is not None else 0
    scale_value = draw(st.sampled_from([0.1, 0.0, -0.1]))
    inits = [graphs.const("s", np.array(scale_value, helper.tensor_dtype_to_np_dtype(scale_type)))]
    inputs = ["x", "s"]
    if zero_np is not None:
        inits.append(graphs.const("z", np.array(zero_value, zero_np)))
        inputs.append("z")
    model = io_model([helper.make_node("QuantizeLinear", inputs, ["q"]),
                      helper.make_node("DequantizeLinear", ["q", *inputs[1:]], ["y"])],
                     [("x", data, [1, 3, 8, 8])], [("y", scale_type, [1, 3, 8, 8])], inits, opset=opset)
    # QuantDequantLinearHelper: zero points 0, scales > 0; IQuantizeLayer: a HALF scale matches its input (>= 19)
    takes = zero_value == 0 and scale_value > 0 and not (opset >= 19 and scale_type == H and data != H)
    return model, takes


@st.composite
def casts(draw: Callable) -> Case:
    source = draw(st.sampled_from([F, H, U8]))
    to = draw(st.sampled_from([F, H, U8, TensorProto.INT16]))
    after = draw(st.sampled_from([None, "Identity", "Relu"]))
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=to)]
    if after:
        nodes.append(helper.make_node(after, ["c"], ["y"]))
    out = "y" if after else "c"
    model = io_model(nodes, [("x", source, [1, 3, 8, 8])], [(out, to, [1, 3, 8, 8])])
    # NvInferRuntimeBase.h kUINT8: converts only to/from FLOAT/HALF, and lives only at network I/O (a UINT8 to UINT8
    # Cast is no conversion; no source refuses it)
    takes = not (source == U8 and to not in (F, H, U8)) and not (to == U8 and source not in (F, H, U8)) \
        and not (to == U8 and after) and to != TensorProto.INT16  # Cast importer: "Unsupported cast!"
    return model, takes


@st.composite
def mods(draw: Callable) -> Case:
    elem = draw(st.sampled_from([F, H, TensorProto.INT32, TensorProto.INT64]))
    fmod = draw(st.integers(0, 1))
    model = io_model([helper.make_node("Mod", ["x", "x"], ["y"], fmod=fmod)], [("x", elem, [1, 3, 8, 8])],
                     [("y", elem, [1, 3, 8, 8])])
    # Mod importer: fmod=0 takes INT32/INT64 only
    return model, fmod == 1 or elem in (TensorProto.INT32, TensorProto.INT64)


@st.composite
def dequantize_granularities(draw: Callable) -> Case:
    rooted = draw(st.booleans())  # constant INT8 weights, or a network input (an activation)
    elem = TensorProto.INT8 if rooted else draw(st.sampled_from([TensorProto.INT8, TensorProto.INT4]))
    kind = draw(st.sampled_from(["tensor", "channel", "block"]))
    scale, attrs = {"tensor": (np.array(0.1, np.float32), {}),
                    "channel": (np.full(4, 0.1, np.float32), {"axis": 0}),
                    "block": (np.full((4, 2), 0.1, np.float32), {"axis": 1, "block_size": 4})}[kind]
    inits = [graphs.const("s", scale)] + ([graphs.const("d", np.ones((4, 8), np.int8))] if rooted else [])
    model = io_model([helper.make_node("DequantizeLinear", ["d", "s"], ["dq"], **attrs),
                      helper.make_node("Identity", ["dq"], ["y"])], [] if rooted else [("d", elem, [4, 8])],
                     [("y", F, [4, 8])], inits, opset=21)
    # IDequantizeLayer: per-channel only rooted at a constant; blocks only for FP4/FP8/INT4
    return model, not (kind == "channel" and not rooted) and not (kind == "block" and elem == TensorProto.INT8)


@st.composite
def blocks(draw: Callable) -> Case:
    """DequantizeLinear of constant weights with a scale of the weights' rank, each axis kept or cut in 1-4 blocks."""
    elem = draw(st.sampled_from([TensorProto.INT4, TensorProto.FLOAT8E4M3FN, TensorProto.INT8]))
    data = draw(st.lists(st.sampled_from([3, 4, 6, 8]), min_size=2, max_size=3))
    scale = [draw(st.sampled_from([d, 1, 2, 3, 4])) for d in data]
    cut = [i for i, (d, s) in enumerate(zip(data, scale, strict=True)) if d != s]
    attrs = {"axis": cut[-1], "block_size": -(-data[cut[-1]] // scale[cut[-1]])} if cut else {}
    zeros = np.zeros(scale, np.float32).ravel().tolist()
    inits = [helper.make_tensor("d", elem, data, np.zeros(data, np.float32).ravel().tolist()),
             graphs.const("s", np.full(scale, 0.1, np.float32)), helper.make_tensor("z", elem, scale, zeros)]
    model = io_model([helper.make_node("DequantizeLinear", ["d", "s", "z"], ["dq"], **attrs),
                      helper.make_node("Identity", ["dq"], ["y"])], [], [("y", F, data)], inits, opset=21)
    # IDequantizeLayer: blocks for FP8/INT4 only, scale rank <= 2, one axis cut in whole blocks; 4-bit: even counts
    whole = len(cut) == 1 and data[cut[0]] % scale[cut[0]] == 0
    block_ok = int(np.prod(scale)) == 1 or (elem != TensorProto.INT8 and len(data) <= 2 and whole)
    return model, block_ok and not (elem == TensorProto.INT4 and int(np.prod(data)) % 2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(pools(), topks(), grid_samples(), qdqs(), casts(), mods(), dequantize_granularities(),
                 blocks()))
def test_lint_double_and_source_rule_agree(case: Case) -> None:
    model, takes = case
    assert (not lint_errors(model)) == takes
    assert double_parses(model) == takes
