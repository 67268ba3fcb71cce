"""The CPU layout ("inputs+outputs") routes every consumer of a quantized tensor through one DequantizeLinear:
a residual Add's output feeds the next conv and the next Add, and both must read the Q/DQ (else OpenVINO keeps a
float copy alive and runs the chain in float blocks). The TensorRT layout ("inputs") is unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploykit.calib.collect import collect_stats
from deploykit.calib.methods import MinMax, amax
from deploykit.calib.qdq import calibration_tensors, qdq_from_ranges
from deploykit.evaluate import session_from_onnx


def _conv(name: str, x: str, out: str, rng: np.random.Generator) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    weight = numpy_helper.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32), f"{name}.w")
    return helper.make_node("Conv", [x, weight.name], [out], name=name, pads=[1, 1, 1, 1]), weight


@pytest.fixture(scope="module")
def residual() -> onnx.ModelProto:
    """stem -> a; s1 = a + B(a); s2 = s1 + C(s1); output = D(s2): s1 feeds conv C and the second Add."""
    rng = np.random.default_rng(0)
    convs = [_conv("stem", "input", "a", rng), _conv("B", "a", "b", rng), _conv("C", "s1", "c", rng),
             _conv("D", "s2", "output", rng)]
    nodes = [convs[0][0], convs[1][0], helper.make_node("Add", ["a", "b"], ["s1"], name="add1"), convs[2][0],
             helper.make_node("Add", ["s1", "c"], ["s2"], name="add2"), convs[3][0]]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                  [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [w for _, w in convs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def ranges(residual: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    collection = collect_stats(residual, calibration_tensors(residual), iter([x]))
    return {name: amax(stats, MinMax()) for name, stats in collection.stats.items()}


def _inputs_of(model: onnx.ModelProto, name: str) -> list[str]:
    return list(next(n for n in model.graph.node if n.name == name).input)


def test_the_next_add_reads_the_shared_dequantize(residual: onnx.ModelProto, ranges: dict[str, float],
                                                   x: np.ndarray) -> None:
    cpu = qdq_from_ranges(residual, ranges, quantize_outputs=True).model
    onnx.checker.check_model(cpu, full_check=True)
    conv_c_input = _inputs_of(cpu, "C")[0]
    assert conv_c_input != "s1" and _inputs_of(cpu, "add2")[0] == conv_c_input  # one DequantizeLinear, shared
    dequantize = [n for n in cpu.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("s1")]
    assert len(dequantize) == 1
    assert not any("s1" in n.input for n in cpu.graph.node if n.op_type != "QuantizeLinear")  # no float reader
    session = session_from_onnx(cpu.SerializeToString(), optimization="disable")
    reference = session_from_onnx(residual.SerializeToString(), optimization="disable")
    got, want = (np.asarray(s.run(None, {"input": x})[0]) for s in (session, reference))
    assert float(np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want))) > 0.99


def test_tensorrt_layout_and_keep_float_keep_the_float_tensor(residual: onnx.ModelProto,
                                                              ranges: dict[str, float]) -> None:
    trt = qdq_from_ranges(residual, ranges, quantize_outputs=False).model
    # the TensorRT layout quantizes a residual Add's skip (deploykit.calib.qdq) but shares no DequantizeLinear
    assert _inputs_of(trt, "add2")[0] == "s1_dequantized" and _inputs_of(trt, "C")[0] != "s1"
    kept_add = qdq_from_ranges(residual, ranges, keep_float=["add2"], quantize_outputs=True).model
    assert _inputs_of(kept_add, "add2")[0] == "s1"
    kept_conv = qdq_from_ranges(residual, ranges, keep_names=["C"], quantize_outputs=True)
    assert [k.name for k in kept_conv.kept] == ["C"]
