"""Which INT8 convolutions the CPU runtimes compute exactly with full-range weights, on the CPU running the tests
(deploykit.graph.seven_bit): a depthwise conv on every CPU, a dense conv only with VNNI. The oracle is the
graph's own arithmetic (ONNX Runtime with graph optimizations off dequantizes and convolves in float); the runtimes'
integer kernels (QLinearConv, OpenVINO's u8 Convolution) must land within one output step of it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from deploykit.evaluate import session_from_onnx, session_options
from deploykit.graph.seven_bit import QMAX, depthwise_weights, needs_seven_bit_weights, seven_bit_weights

CHANNELS, SIZE, KERNEL = 8, 6, 3
X_SCALE = 1.0 / 255  # the input's codes are its values * 255, zero point 0: u8 codes 0..255
ONE_STEP = 1 + 1e-4  # a rounding tie the two orders of float arithmetic break differently


def _conv_graph(codes: np.ndarray, group: int) -> tuple[onnx.ModelProto, float]:
    """x -> Q/DQ (u8) -> Conv(DQ(int8 codes), per-channel scale 1/127) -> Q/DQ (u8) -> y, and y's step: the output
    range covers the largest sum the weights can make, so no output is clipped."""
    w_scale = np.full(codes.shape[0], 1.0 / QMAX, np.float32)
    per_output = np.abs(codes.astype(np.float64)).reshape(codes.shape[0], -1).sum(1) * (255 * X_SCALE) / QMAX
    y_scale = float(max(per_output.max(), 1e-3) * 2 / 255)  # zero point 128: signed sums
    inits = [numpy_helper.from_array(codes.astype(np.int8), "w_q"), numpy_helper.from_array(w_scale, "w_s"),
             numpy_helper.from_array(np.zeros(codes.shape[0], np.int8), "w_zp"),
             numpy_helper.from_array(np.array(X_SCALE, np.float32), "x_s"),
             numpy_helper.from_array(np.array(0, np.uint8), "x_zp"),
             numpy_helper.from_array(np.array(y_scale, np.float32), "y_s"),
             numpy_helper.from_array(np.array(128, np.uint8), "y_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_zp"], ["x_q"], name="qx"),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_zp"], ["x_dq"], name="dqx"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="dqw", axis=0),
             helper.make_node("Conv", ["x_dq", "w"], ["c"], name="conv", group=group),
             helper.make_node("QuantizeLinear", ["c", "y_s", "y_zp"], ["c_q"], name="qy"),
             helper.make_node("DequantizeLinear", ["c_q", "y_s", "y_zp"], ["y"], name="dqy")]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              [1, CHANNELS, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), y_scale


def _steps_off(model: onnx.ModelProto, y_scale: float, codes_x: np.ndarray, run: str) -> float:
    """How many output steps the runtime's integer kernel is off from the graph's arithmetic, worst pixel."""
    x = (codes_x.astype(np.float32) * X_SCALE)[None]
    reference = session_from_onnx(model.SerializeToString(), optimization="disable")
    expected = reference.run(None, {"x": x})[0]
    got = _onnxruntime(model)(x) if run == "onnxruntime" else _openvino(model)(x)
    return float(np.abs(got - expected).max() / y_scale)


def _onnxruntime(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    options = session_options(1, optimization="all")
    with tempfile.TemporaryDirectory() as folder:
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert "QLinearConv" in ops  # the integer kernel, not a float fallback
    return lambda x: session.run(None, {"x": x})[0]


def _openvino(model: onnx.ModelProto):  # type: ignore[no-untyped-def]
    ov = pytest.importorskip("openvino")
    from deploykit.backends.openvino.runner import runtime_precisions

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "conv.onnx"
        onnx.save(model, str(path))
        converted = ov.convert_model(str(path))  # as deploykit's OpenVINO backend reads a graph
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert runtime_precisions(compiled)["Convolution"] == {"u8": 1}  # the integer kernel, not a float fallback
    return lambda x: compiled([x])[0]


RUNTIMES = ["onnxruntime", "openvino"]
EXTREME_CODES = st.sampled_from([0, 255]) | st.integers(0, 255)
EXTREME_WEIGHTS = st.sampled_from([-QMAX, QMAX]) | st.integers(-QMAX, QMAX)


@pytest.mark.parametrize("run", RUNTIMES)
@settings(max_examples=25, deadline=None)
@given(weights=hnp.arrays(np.int8, (CHANNELS, 1, KERNEL, KERNEL), elements=EXTREME_WEIGHTS),
       inputs=hnp.arrays(np.uint8, (CHANNELS, SIZE, SIZE), elements=EXTREME_CODES))
def test_depthwise_full_range_weights_are_exact(run: str, weights: np.ndarray, inputs: np.ndarray) -> None:
    model, y_scale = _conv_graph(weights, group=CHANNELS)
    assert depthwise_weights(model) == {"w_q"}  # so the lowering leaves these weights full range
    assert _steps_off(model, y_scale, inputs, run) <= ONE_STEP


@pytest.mark.parametrize("run", RUNTIMES)
def test_dense_full_range_weights_saturate_only_without_vnni(run: str) -> None:
    """The worst case for a u8 x s8 pair sum (255 * 127 twice): exact with VNNI, far off without it, exact again
    once the lowering has made the weights 7-bit."""
    weights = np.full((CHANNELS, CHANNELS, KERNEL, KERNEL), QMAX, np.int8)
    inputs = np.full((CHANNELS, SIZE, SIZE), 255, np.uint8)
    model, y_scale = _conv_graph(weights, group=1)
    assert not depthwise_weights(model)
    off = _steps_off(model, y_scale, inputs, run)
    assert (off > 5) == needs_seven_bit_weights(), off
    seven_bit_weights(model)
    assert _steps_off(model, y_scale, inputs, run) <= ONE_STEP


def test_only_a_channel_multiplier_of_one_counts_as_depthwise() -> None:
    """A grouped conv with several input channels per group, or several outputs per group, takes the runtimes'
    GEMM kernels: its weights go 7-bit like a dense conv's."""
    two_in = np.ones((CHANNELS // 2, 2, KERNEL, KERNEL), np.int8)  # 4 groups of 2 input channels
    assert not depthwise_weights(_conv_graph(two_in, group=CHANNELS // 2)[0])
    two_out = np.ones((2 * CHANNELS, 1, KERNEL, KERNEL), np.int8)  # channel multiplier 2
    assert not depthwise_weights(_conv_graph(two_out, group=CHANNELS)[0])
