"""INT8 placement for TensorRT's fusions: ConvTranspose weights per input channel (axis 0) that ONNX Runtime runs
exactly and the TensorRT double accepts (axis 1 rejected), residual skips quantized for every residual Add of
DeepLabv3+ MobileNetV2, one scale per quantized Concat, and DeconvNet / U-Net parity through ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploykit.calib.collect import collect_stats
from deploykit.calib.methods import MinMax, amax
from deploykit.calib.qdq import QdqResult, calibration_tensors, qdq_from_ranges
from deploykit.evaluate import session_from_onnx
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.graph.lint import lint_model
from deploykit.zoo import get_model_spec
from deploykit.zoo.sources import load_model
from tests.fakes.tensorrt_double import make_tensorrt
from tests.fakes.tensorrt_double._state import Logger
from tests.fixtures.tiny import TINY


def _inputs(shape: tuple[int, ...], n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _quantize(model: onnx.ModelProto, inputs: list[np.ndarray], *, outputs: bool = False) -> QdqResult:
    collection = collect_stats(model, calibration_tensors(model), iter(inputs))
    ranges = {name: amax(stats, MinMax()) for name, stats in collection.stats.items()}
    return qdq_from_ranges(model, ranges, quantize_outputs=outputs)


def _run(model: onnx.ModelProto, x: np.ndarray, optimization: str = "extended") -> np.ndarray:
    session = session_from_onnx(model.SerializeToString(), optimization=optimization)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _deconv_graph() -> onnx.ModelProto:
    """input -> Conv -> Relu -> ConvTranspose (4 -> 6 channels, x2) -> Relu -> Conv -> output."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)
             for name, shape in (("w1", (4, 3, 3, 3)), ("wt", (4, 6, 2, 2)), ("w2", (2, 6, 1, 1)))]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["a"], ["b"], name="relu1"),
             helper.make_node("ConvTranspose", ["b", "wt"], ["c"], strides=[2, 2], name="up"),
             helper.make_node("Relu", ["c"], ["d"], name="relu2"),
             helper.make_node("Conv", ["d", "w2"], ["output"], name="conv2")]
    graph = helper.make_graph(nodes, "deconv", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               [1, 3, 8, 10])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 16, 20])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _parses(model: onnx.ModelProto) -> bool:
    trt = make_tensorrt("11")
    network = trt.Builder(Logger()).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    return bool(trt.OnnxParser(network, Logger()).parse(model.SerializeToString()))


def _weight_dq(model: onnx.ModelProto, op: str) -> onnx.NodeProto:
    node = next(n for n in model.graph.node if n.op_type == op)
    return next(n for n in model.graph.node if n.output[0] == node.input[1])


@pytest.mark.parametrize("outputs", [False, True])
def test_convtranspose_weights_per_input_channel_run_exactly_in_onnxruntime(outputs: bool) -> None:
    model = _deconv_graph()
    inputs = _inputs((1, 3, 8, 10))
    int8 = _quantize(model, inputs, outputs=outputs).model
    dq = _weight_dq(int8, "ConvTranspose")
    scales = numpy_helper.to_array(next(i for i in int8.graph.initializer if i.name == dq.input[1]))
    assert next(a.i for a in dq.attribute if a.name == "axis") == 0 and scales.shape == (4,)  # C_in
    # ONNX Runtime's optimized session computes exactly what the unoptimized one (the ONNX semantics) does.
    for x in inputs:
        reference = _run(int8, x, optimization="disable")
        assert np.array_equal(_run(int8, x, "extended"), reference)
        assert np.array_equal(_run(int8, x, "all"), reference)
        assert _cosine(_run(model, x), reference) > 0.995
    assert _parses(int8)
    assert not [f for f in lint_model(int8).findings if f.rule == "qdq-weight-axis"]


def test_double_and_lint_reject_convtranspose_weights_on_axis_1() -> None:
    model = _quantize(_deconv_graph(), _inputs((1, 3, 8, 10))).model
    dq = _weight_dq(model, "ConvTranspose")
    inits = {i.name: i for i in model.graph.initializer}
    weight = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float32) * numpy_helper.to_array(
        inits[dq.input[1]]).reshape(-1, 1, 1, 1)
    scale = np.abs(weight).max(axis=(0, 2, 3)) / 127  # per output channel: what axis 1 means
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(
        np.round(weight / scale.reshape(1, -1, 1, 1)).astype(np.int8), dq.input[0]))
    inits[dq.input[1]].CopyFrom(numpy_helper.from_array(scale.astype(np.float32), dq.input[1]))
    inits[dq.input[2]].CopyFrom(numpy_helper.from_array(np.zeros(6, np.int8), dq.input[2]))
    next(a for a in dq.attribute if a.name == "axis").i = 1
    onnx.checker.check_model(model)
    assert not _parses(model)
    finding = next(f for f in lint_model(model).findings if f.rule == "qdq-weight-axis")
    assert finding.severity == "error" and "#2380" in finding.why


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, onnx.ModelProto]:
    folder = tmp_path_factory.mktemp("zoo-qdq")
    models = {}
    for name in ("deeplabv3plus_mobilenetv2", "unet", "deconvnet"):
        spec = get_model_spec(name)
        path = folder / f"{name}.onnx"
        loaded = load_model(name, options=dict(TINY[spec.name].options))
        assert onnx_from_torch(loaded, path, input_shape=(1, 3, *TINY[spec.name].input_size), simplify=False).passed
        models[name] = onnx.load(str(path))
    return models


def _size(name: str) -> tuple[int, int, int, int]:
    return (1, 3, *TINY[get_model_spec(name).name].input_size)


def test_every_residual_add_of_mobilenetv2_reads_a_quantized_skip(zoo: dict[str, onnx.ModelProto]) -> None:
    model = zoo["deeplabv3plus_mobilenetv2"]
    adds = [n.name for n in model.graph.node if n.op_type == "Add"]
    result = _quantize(model, _inputs(_size("deeplabv3plus_mobilenetv2"), 2))
    assert len(adds) >= 10 and result.residual_adds == sorted(adds)
    producers = {o: n for n in result.model.graph.node for o in n.output}
    for node in result.model.graph.node:
        if node.op_type == "Add":  # one input straight from a quantized conv, the other dequantized
            kinds = sorted(producers[i].op_type for i in node.input)
            assert kinds == ["Conv", "DequantizeLinear"], (node.name, kinds)
    rules = {f.rule for f in lint_model(result.model).findings}
    assert not rules & {"qdq-residual-add", "qdq-unfused-dq", "qdq-concat-scales"}


def _concat_scales(model: onnx.ModelProto) -> list[set[float]]:
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers = {i: n for n in model.graph.node for i in n.input}
    inits = {i.name: float(numpy_helper.to_array(i).reshape(-1)[0]) for i in model.graph.initializer
             if not i.dims}
    groups = []
    for node in model.graph.node:
        if node.op_type == "Concat" and consumers.get(node.output[0]) is not None:
            scales = {inits[producers[i].input[1]] for i in node.input if producers[i].op_type == "DequantizeLinear"}
            after = consumers[node.output[0]]
            if after.op_type == "QuantizeLinear":
                groups.append(scales | {inits[after.input[1]]})
    return groups


def test_concat_inputs_share_one_scale(zoo: dict[str, onnx.ModelProto]) -> None:
    result = _quantize(zoo["unet"], _inputs(_size("unet"), 2), outputs=True)
    groups = _concat_scales(result.model)
    assert len(result.shared_concats) == len(groups) >= 2
    assert all(len(scales) == 1 for scales in groups), groups
    assert not [f for f in lint_model(result.model).findings if f.rule == "qdq-concat-scales"]


@pytest.mark.parametrize("name", ["deconvnet", "unet"])
def test_tensorrt_form_int8_up_convolutions_agree_in_onnxruntime(name: str, zoo: dict[str, onnx.ModelProto]
                                                                  ) -> None:
    model = zoo[name]
    inputs = _inputs(_size(name), 3)
    int8 = _quantize(model, inputs[:2]).model
    assert any(n.op_type == "ConvTranspose" for n in int8.graph.node)
    assert next(a.i for a in _weight_dq(int8, "ConvTranspose").attribute if a.name == "axis") == 0
    for x in inputs:
        assert _cosine(_run(model, x), _run(int8, x)) > 0.98
    assert _parses(int8)
