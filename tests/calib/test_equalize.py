"""Cross-layer equalization: the pair's channel ranges meet, the float function stays (ReLU, ReLU6 with its
moved clip points, depthwise pairs), and the quantized unit still ends where the activation does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from deploykit.calib.equalize import Equalization, equalize, find_pairs
from deploykit.calib.qdq import calibration_tensors, qdq_from_ranges
from deploykit.evaluate import session_from_onnx
from deploykit.graph.tensors import index_graph
from deploykit.precision.recovery import EQUALIZE
from tests.calib.recovery_models import clip_node, conv, inputs, model


def _pair(activation: str, *, depthwise: str = "") -> onnx.ModelProto:
    """conv a (3 -> 8 channels, or 8 -> 8 depthwise) -> activation -> conv b (8 -> 5, or 8 -> 8 depthwise), with
    output-channel scales of conv a spread over four decades so the ranges differ a lot."""
    rng = np.random.default_rng(0)
    spread = np.logspace(-2, 2, 8).reshape(-1, 1, 1, 1)
    first_in = 8 if depthwise == "first" else 3
    w1 = rng.standard_normal((8, 1 if depthwise == "first" else 3, 3, 3)) * spread
    w2 = rng.standard_normal((8, 1, 3, 3) if depthwise == "second" else (5, 8, 3, 3))
    a, a_inits = conv("a", "x", "t", w1, rng.standard_normal(8) * spread.ravel(),
                      group=8 if depthwise == "first" else 1)
    if activation == "relu":
        act, act_inits = helper.make_node("Relu", ["t"], ["u"], name="act"), []
    else:
        act, act_inits = clip_node("act", "t", "u")
    out = 8 if depthwise == "second" else 5
    b, b_inits = conv("b", "u", "y", w2, rng.standard_normal(out), group=8 if depthwise == "second" else 1)
    return model([a, act, b], [*a_inits, *act_inits, *b_inits], first_in, out)


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = session_from_onnx(m.SerializeToString(), optimization="disable")
    return np.asarray(session.run(None, {"x": x})[0])


def _ranges(m: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    """conv a's output-channel ranges and conv b's ranges per input channel."""
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    nodes = {n.name: n for n in m.graph.node}
    w1, w2 = inits[nodes["a"].input[1]], inits[nodes["b"].input[1]]
    r1 = np.abs(w1).reshape(8, -1).max(axis=1)
    r2 = np.abs(w2).max(axis=(1, 2, 3)) if w2.shape[1] == 1 else np.abs(w2).max(axis=(0, 2, 3))
    return r1, r2


CASES = [("relu", ""), ("relu6", ""), ("relu6", "first"), ("relu6", "second"), ("relu", "second")]


@pytest.mark.parametrize(("activation", "depthwise"), CASES)
def test_equalized_pair_keeps_the_function_and_meets_in_the_middle(activation: str, depthwise: str) -> None:
    source = _pair(activation, depthwise=depthwise)
    done = equalize(source, Equalization())
    assert len(done.pairs) == 1
    r1, r2 = _ranges(source)
    e1, e2 = _ranges(done.model)
    np.testing.assert_allclose(e1, e2, rtol=1e-5)  # the ranges meet...
    np.testing.assert_allclose(e1, np.sqrt(r1 * r2), rtol=1e-5)  # ...in the geometric middle
    assert e1.max() / e1.min() < r1.max() / r1.min() / 10  # conv a's channels are far more alike
    for x in inputs(3, source.graph.input[0].type.tensor_type.shape.dim[1].dim_value, scale=3.0):
        want, got = _run(source, x), _run(done.model, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_relu6_clip_points_move_with_the_scales() -> None:
    """The activations do cross 6 here, so a ReLU6 left as Clip(0, 6) (or swapped for ReLU) would change the
    output; the equalized graph clips each channel at 6 / s_i instead."""
    source = _pair("relu6")
    x = inputs(1, 3, scale=3.0)[0]
    probe = onnx.ModelProto.FromString(source.SerializeToString())
    probe.graph.output.append(helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, None))
    assert float(_run_all(probe, x)[1].max()) > 6.0  # the clip binds
    done = equalize(source, Equalization()).model
    ops = [n.op_type for n in done.graph.node]
    assert "Clip" not in ops and ops.count("Min") == 1
    swapped = onnx.ModelProto.FromString(done.SerializeToString())
    minimum = next(n for n in swapped.graph.node if n.op_type == "Min")
    relu = next(n for n in swapped.graph.node if n.op_type == "Relu")
    relu.output[0] = minimum.output[0]
    swapped.graph.node.remove(minimum)
    assert not np.allclose(_run(swapped, x), _run(source, x), rtol=1e-3, atol=1e-3)  # ReLU alone would differ


def _run_all(m: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = session_from_onnx(m.SerializeToString(), optimization="disable")
    return [np.asarray(v) for v in session.run(None, {"x": x})]


def test_the_quantized_unit_ends_after_the_per_channel_clip() -> None:
    done = equalize(_pair("relu6"), Equalization()).model
    minimum = next(n for n in done.graph.node if n.op_type == "Min")
    assert minimum.output[0] in calibration_tensors(done)
    qdq = qdq_from_ranges(done, dict.fromkeys(calibration_tensors(done), 6.0), quantize_outputs=False).model
    index = index_graph(qdq, infer_types=False)
    b = next(n for n in qdq.graph.node if n.name == "b")
    dq = index.producer[b.input[0]]
    assert dq.op_type == "DequantizeLinear" and index.producer[dq.input[0]].input[0] == minimum.output[0]


def test_options_choose_the_pairs() -> None:
    assert find_pairs(_pair("relu6"), Equalization(relu6=False)) == []
    assert find_pairs(_pair("relu"), Equalization(relu=False)) == []
    unchanged = equalize(_pair("relu"), Equalization(rounds=0))
    assert unchanged.pairs == []
    assert find_pairs(_pair("relu"), EQUALIZE["relu6"]) == [] and find_pairs(_pair("relu6"), EQUALIZE["relu"]) == []
    assert len(find_pairs(_pair("relu6"), EQUALIZE["relu6"])) == len(find_pairs(_pair("relu"), EQUALIZE["relu"])) == 1


def test_a_shared_intermediate_tensor_is_left_alone() -> None:
    """A tensor with a second reader (a residual branch) would see the rescaled channels: no pair."""
    source = _pair("relu")
    source.graph.node.append(helper.make_node("Identity", ["t"], ["t_copy"], name="branch"))
    source.graph.output.append(helper.make_tensor_value_info("t_copy", onnx.TensorProto.FLOAT, None))
    assert find_pairs(source, Equalization()) == []
