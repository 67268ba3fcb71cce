"""The FP16 pass's range checks on constants and reductions: constants beyond 65504 keep their consumer in
float32, values below float16's smallest subnormal become it (no 0/0), and reductions are judged by what they
accumulate."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploykit.evaluate import session_from_onnx
from deploykit.graph.fp16 import FP16_TINY, fp16_from_onnx


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = session_from_onnx(model.SerializeToString())
    return np.asarray(session.run(None, {"x": x})[0])


def _kept(model: onnx.ModelProto, **absmax: float) -> dict[str, str]:
    return {k.name: k.reason for k in fp16_from_onnx(model, activation_absmax=absmax).kept}


@pytest.mark.parametrize("as_constant_node", [False, True])
def test_constants_beyond_float16_keep_their_consumer(as_constant_node: bool) -> None:
    big = numpy_helper.from_array(np.array([1.0e5], np.float32), "big")
    nodes = [helper.make_node("Mul", ["x", "big"], ["y"], name="scale")]
    if as_constant_node:
        nodes.insert(0, helper.make_node("Constant", [], ["big"], value=big, name="big_const"))
    model = _model(nodes, [] if as_constant_node else [big], [1, 4])
    assert "constant big reaches 1e+05" in _kept(model, x=1.0, y=1e5)["scale"]
    x = np.full((1, 4), 0.5, np.float32)
    assert np.allclose(_run(fp16_from_onnx(model).model, x), 5e4)


def test_tiny_constants_become_the_smallest_subnormal_not_zero() -> None:
    """x / (x * x + 1e-9): with 1e-9 flushed to zero, x = 0 gives 0/0 = NaN in float16."""
    eps = numpy_helper.from_array(np.array(1e-9, np.float32), "eps")
    nodes = [helper.make_node("Mul", ["x", "x"], ["xx"], name="square"),
             helper.make_node("Add", ["xx", "eps"], ["den"], name="plus_eps"),
             helper.make_node("Div", ["x", "den"], ["y"], name="ratio")]
    model = _model(nodes, [eps], [1, 3])
    half = fp16_from_onnx(model).model
    stored = next(numpy_helper.to_array(i) for i in half.graph.initializer if i.name.startswith("eps"))
    assert stored.dtype == np.float16 and float(stored) == pytest.approx(FP16_TINY)
    out = _run(half, np.array([[0.0, 0.5, 2.0]], np.float32))
    assert not np.isnan(out).any() and out[0, 0] == 0.0


def test_reductions_are_judged_by_what_they_accumulate() -> None:
    model = _model([helper.make_node("GlobalAveragePool", ["x"], ["y"], name="pool")], [], [1, 2, 256, 256])
    reason = _kept(model, x=1.0, y=1.0)["pool"]
    assert "over 65536 elements accumulates up to 6.554e+04" in reason
    small = _model([helper.make_node("GlobalAveragePool", ["x"], ["y"], name="pool")], [], [1, 2, 16, 16])
    assert "pool" not in _kept(small, x=1.0, y=1.0)
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    mean = _model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean")], [axes], [1, 2, 64, 64])
    assert "over 4096 elements accumulates up to 8.192e+04" in _kept(mean, x=20.0, y=10.0)["mean"]
    assert "mean" not in _kept(mean, x=5.0, y=5.0)
    # The accumulator sums the inputs: a mean near zero over inputs of +-10 can still reach 4096 x 10 on its way
    # (bounded by the input's range, not the result's: the result's max times the extent said 41 here).
    assert "accumulates up to 4.096e+04" in _kept(mean, x=10.0, y=0.01)["mean"]
    softmax = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1, name="softmax")], [], [1, 40000])
    assert "over 40000 elements" in _kept(softmax, x=1.0, y=1.0)["softmax"]
    short = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1, name="softmax")], [], [1, 400])
    assert "softmax" not in _kept(short, x=1.0, y=1.0)
