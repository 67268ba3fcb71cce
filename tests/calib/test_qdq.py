"""Q/DQ insertion: symmetric zero points, per-channel weight scales on the output-channel axis, placement
(Resize never quantized, logits left float, keep lists), and ONNX Runtime's INT8 lowerings."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from deploykit.calib.collect import collect_stats
from deploykit.calib.methods import MinMax, amax
from deploykit.calib.qdq import calibration_tensors, qdq_from_ranges
from deploykit.errors import ConfigConflict
from deploykit.evaluate import session_from_onnx
from deploykit.graph.cpu_int8 import lower_for_cpu
from deploykit.graph.seven_bit import SEVEN_BIT, depthwise_weights, seven_bit_weights
from tests.fixtures.precision_models import export_user_model


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    return onnx.load(str(export_user_model(tmp_path_factory.mktemp("qdq") / "net.onnx")))


@pytest.fixture(scope="module")
def inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, 32, 40)).astype(np.float32) for _ in range(4)]


@pytest.fixture(scope="module")
def ranges(net: onnx.ModelProto, inputs: list[np.ndarray]) -> dict[str, float]:
    tensors = calibration_tensors(net)
    collection = collect_stats(net, tensors, iter(inputs))
    return {name: amax(stats, MinMax()) for name, stats in collection.stats.items()}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _run(model: onnx.ModelProto, x: np.ndarray, optimization: str = "all") -> np.ndarray:
    session = session_from_onnx(model.SerializeToString(), optimization=optimization)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("outputs", [True, False])
def test_symmetric_per_channel_and_runs(net: onnx.ModelProto, ranges: dict[str, float], inputs: list[np.ndarray],
                                        outputs: bool) -> None:
    result = qdq_from_ranges(net, ranges, quantize_outputs=outputs)
    model = result.model
    onnx.checker.check_model(model, full_check=True)
    inits = _inits(model)
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(result.quantized) == len(weighted) == 6 and not result.kept
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = inits[node.input[2]]
            assert zero.dtype == np.int8 and not zero.any()  # symmetric: zero point 0 everywhere
    for conv in weighted:
        dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
        weight, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next(a.i for a in dq.attribute if a.name == "axis")
        channels_axis = 0  # Conv's output channels, ConvTranspose's input channels (as TensorRT requires)
        assert axis == channels_axis and scale.shape == (weight.shape[channels_axis],)
        assert weight.dtype == np.int8 and np.abs(weight).max() == 127 and weight.min() >= -127
        peaks = np.abs(np.moveaxis(weight, channels_axis, 0).reshape(weight.shape[channels_axis], -1)).max(1)
        assert (peaks == 127).all()  # each channel uses its own full range
        x_dq = next(n for n in model.graph.node if n.output[0] == conv.input[0])
        assert x_dq.op_type == "DequantizeLinear"
    x = inputs[0]
    assert _cosine(_run(net, x), _run(model, x, optimization="disable")) > 0.99


def test_activation_scale_is_amax_over_127(net: onnx.ModelProto, ranges: dict[str, float]) -> None:
    model = qdq_from_ranges(net, ranges).model
    inits = _inits(model)
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert float(inits[q.input[1]]) == pytest.approx(ranges["input"] / 127)


def test_resize_and_logits_stay_float(net: onnx.ModelProto, ranges: dict[str, float]) -> None:
    model = qdq_from_ranges(net, ranges, quantize_outputs=True).model
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {name: [n.op_type for n in model.graph.node if name in n.input] for name in producers}
    resizes = [n for n in model.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 4
    for node in resizes:  # never DQ -> Resize -> Q, the pattern that asks for an INT8 Resize
        fed_dequantized = producers[node.input[0]].op_type == "DequantizeLinear"
        assert not (fed_dequantized and "QuantizeLinear" in consumers[node.output[0]]), node.name
    quantized_tensors = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    head = next(n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith("/head"))
    assert head.output[0] not in quantized_tensors  # logits: nothing downstream runs in INT8
    final = next(n for n in model.graph.node if n.output[0] == "output")
    assert final.op_type == "Resize" and producers[final.input[0]] is head


def test_keep_float_by_type_name_and_depthwise(net: onnx.ModelProto, ranges: dict[str, float]) -> None:
    by_type = qdq_from_ranges(net, ranges, keep_float=["ConvTranspose"])
    assert [k.op_type for k in by_type.kept] == ["ConvTranspose"] and len(by_type.quantized) == 5
    depthwise = qdq_from_ranges(net, ranges, keep_float=["DepthwiseConv"])
    assert [k.name for k in depthwise.kept] == ["/depthwise/depthwise.0/Conv"]
    budget = qdq_from_ranges(net, ranges, keep_names=["/pointwise/Conv"], quantize_outputs=False)
    assert [(k.name, k.reason) for k in budget.kept] == [("/pointwise/Conv", "kept by the accuracy budget")]
    kept_conv = next(n for n in budget.model.graph.node if n.name == "/pointwise/Conv")
    assert not kept_conv.input[0].endswith("_dequantized")  # inputs layout: its input error is gone too
    ort_layout = qdq_from_ranges(net, ranges, keep_names=["/pointwise/Conv"], quantize_outputs=True)
    kept_conv = next(n for n in ort_layout.model.graph.node if n.name == "/pointwise/Conv")
    assert kept_conv.input[0].endswith("_dequantized")  # its producer's quantized output is shared
    with pytest.raises(ConfigConflict, match="no node"):
        qdq_from_ranges(net, ranges, keep_float=["Convv"])


def test_onnxruntime_lowering_is_uint8_after_activations(net: onnx.ModelProto, ranges: dict[str, float],
                                                        inputs: list[np.ndarray]) -> None:
    symmetric = qdq_from_ranges(net, ranges).model
    lowered = lower_for_cpu(symmetric, seven_bit=False)
    assert lowered.unsigned >= 2 and lowered.seven_bit == 0
    inits = _inits(lowered.model)
    producers = {o: n for n in lowered.model.graph.node for o in n.output}
    for node in lowered.model.graph.node:
        if node.op_type == "QuantizeLinear":  # UINT8 everywhere; zero point 0 only after an activation
            assert inits[node.input[2]].dtype == np.uint8
            producer = producers.get(node.input[0])
            source = producers.get(producer.input[0]) if producer is not None and producer.op_type == "Resize" else None
            if source is not None and source.op_type == "DequantizeLinear":  # its input's parameters: UINT8 Resize
                assert node.input[1:] == source.input[1:]
                continue
            after_activation = producer is not None and producer.op_type in ("Relu", "Clip")
            assert int(inits[node.input[2]]) == (0 if after_activation else 128)
    x = inputs[1]
    exact = _run(symmetric, x, optimization="disable")  # reference arithmetic, no fused kernels
    assert _cosine(exact, _run(lowered.model, x, optimization="disable")) > 0.999


def test_seven_bit_weights_double_the_scale(net: onnx.ModelProto, ranges: dict[str, float]) -> None:
    model = qdq_from_ranges(net, ranges).model
    before = _inits(model)
    depthwise = depthwise_weights(model)
    changed, _ = seven_bit_weights(model)
    after = _inits(model)
    assert changed == 5 and len(depthwise) == 1  # the depthwise conv keeps full range (deploykit.graph.seven_bit)
    for name, array in after.items():
        if name in depthwise:
            assert np.array_equal(array, before[name]) and np.abs(array).max() == 127
        elif array.dtype == np.int8 and array.ndim == 4:
            assert np.abs(array).max() <= SEVEN_BIT
            dequantized_before = before[name].astype(np.float32)
            assert np.abs(array.astype(np.float32) * 127 / SEVEN_BIT - dequantized_before).max() <= 1.01


def test_calibration_tensors_cover_every_assignment(net: onnx.ModelProto) -> None:
    tensors = calibration_tensors(net)
    assert "input" in tensors and len(tensors) == len(set(tensors))
    relu_outputs = [n.output[0] for n in net.graph.node if n.op_type in ("Relu", "Clip")]
    assert any(name in tensors for name in relu_outputs)


def test_model_without_weighted_nodes_gets_no_qdq() -> None:
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    result = qdq_from_ranges(onnx.helper.make_model(graph), {"x": 1.0})
    assert result.quantized == [] and result.tensors == []
