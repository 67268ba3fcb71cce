"""The CPU INT8 lowering (issue 15 items 1 and 3; deploykit.graph.cpu_int8): every quantized conv and residual
Add of a zoo model fuses (QLinearConv, QLinearAdd) in the ORT artifact, the UINT8 zero point 128 lowering is
exact, and 7-bit weights on CPUs without VNNI are rounded once from the float weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from deploykit.backends.base import backend_of
from deploykit.build import build_artifact
from deploykit.calib.collect import collect_stats
from deploykit.calib.methods import MinMax, amax
from deploykit.calib.qdq import QdqBuilder, calibration_tensors, qdq_from_ranges
from deploykit.evaluate import session_from_onnx, session_options
from deploykit.graph.cpu_int8 import lower_for_cpu
from deploykit.graph.seven_bit import SEVEN_BIT, depthwise_weights, needs_seven_bit_weights
from deploykit.graph.unsigned import unsigned_activations
from deploykit.io.metadata import read_observed_ranges
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import PRECISIONS
from tests.fixtures.cpu import depthwise_int8_weights, simulate_cpu
from tests.fixtures.precision_models import export_user_model
from tests.fixtures.tiny import TINY

FLOAT_CONVS = ("Conv", "FusedConv", "ConvTranspose")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    return onnx.load(str(export_user_model(tmp_path_factory.mktemp("lower") / "net.onnx")))


@pytest.fixture(scope="module")
def inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, 32, 40)).astype(np.float32) for _ in range(3)]


@pytest.fixture(scope="module")
def symmetric(net: onnx.ModelProto, inputs: list[np.ndarray]) -> onnx.ModelProto:
    collection = collect_stats(net, calibration_tensors(net), iter(inputs))
    ranges = {name: amax(stats, MinMax()) for name, stats in collection.stats.items()}
    return qdq_from_ranges(net, ranges).model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = session_from_onnx(model.SerializeToString(), optimization="disable")  # reference arithmetic
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _ops_after_ort(path: Path, tmp: Path) -> list[str]:
    """Op types of the graph ONNX Runtime runs (all optimizations, as sessions load artifacts)."""
    options = session_options(2, optimization="all")
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp / "optimized.onnx")).graph.node]


def _float_output_units(graph: onnx.ModelProto) -> int:
    """Quantized convs of a precision graph whose output the placement leaves float (the logits conv):
    ONNX Runtime needs a QuantizeLinear after a conv to fuse it (deploykit.calib.qdq keeps them float)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    producer = {o: n for n in graph.graph.node for o in n.output}
    count = 0
    for node in graph.graph.node:
        if node.op_type != "Conv" or producer.get(node.input[1], onnx.NodeProto()).op_type != "DequantizeLinear":
            continue
        after = readers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type in ("Relu", "Clip"):
            after = readers.get(after[0].output[0], [])
        if len(after) == 1 and after[0].op_type == "Min":  # an equalized ReLU6's per-channel clip
            after = readers.get(after[0].output[0], [])
        count += not after or any(r.op_type != "QuantizeLinear" for r in after)
    return count


@pytest.mark.parametrize("name", ["deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50"])
def test_no_quantized_conv_of_a_zoo_model_runs_in_float(name: str, tmp_path: Path) -> None:
    from deploykit.export.onnx_from_torch import onnx_from_torch
    from deploykit.zoo import get_model_spec
    from deploykit.zoo.sources import load_model

    spec = get_model_spec(name)
    fp32 = tmp_path / "model.onnx"
    assert onnx_from_torch(load_model(name, options=dict(TINY[spec.name].options)), fp32, dynamic=False,
                           input_shape=(1, 3, *TINY[spec.name].input_size)).passed
    calibration = CalibrationOptions(data="synthetic", n=2)
    out = tmp_path / "model-int8.onnx"
    result = build_artifact(fp32, out, precision=PRECISIONS["int8"], backend=backend_of("onnxruntime"),
                            calibration=calibration)
    assert result.precision_onnx is not None
    graph = onnx.load(str(result.precision_onnx))
    convs = sum(n.op_type == "Conv" for n in graph.graph.node)
    ops = _ops_after_ort(out, tmp_path)
    float_convs = sum(op in FLOAT_CONVS for op in ops)
    assert float_convs == _float_output_units(graph) == 1  # the logits conv only, by the placement's rule
    assert ops.count("QLinearConv") == convs - 1
    adds = sum(n.op_type == "Add" for n in onnx.load(str(fp32)).graph.node)
    assert adds and ops.count("QLinearAdd") == adds and "Add" not in ops  # residual Adds fuse too
    assert "MaxPool" not in ops  # ResNet's stem pool runs on UINT8 (NhwcMaxPool) between matching Q/DQ
    assert ops.count("QLinearConcat") == 2 and "Concat" not in ops  # ASPP and decoder, Resize on UINT8
    # a node kept by the user stays float, and nothing else does
    kept_name = next(n.name for n in graph.graph.node if n.op_type == "Conv")
    kept_out = tmp_path / "kept.onnx"
    build_artifact(fp32, kept_out, precision=PRECISIONS["int8"], backend=backend_of("onnxruntime"),
                   calibration=calibration,
                   keeps={"keep_float": [kept_name]})
    assert sum(op in FLOAT_CONVS for op in _ops_after_ort(kept_out, tmp_path)) == 2


def test_zero_point_128_lowering_is_exact(symmetric: onnx.ModelProto, inputs: list[np.ndarray]) -> None:
    partial, partial_count = unsigned_activations(symmetric, everywhere=False)
    full, full_count = unsigned_activations(symmetric)
    assert full_count > partial_count >= 2
    inits = _inits(full)
    zero_points = {int(inits[n.input[2]]) for n in full.graph.node if n.op_type == "QuantizeLinear"}
    assert zero_points == {0, 128}
    assert all(inits[n.input[2]].dtype == np.uint8 for n in full.graph.node if n.op_type == "QuantizeLinear")
    for x in inputs:  # zero point 128 with the same scale: the same dequantized values as INT8 zero point 0
        np.testing.assert_allclose(_run(full, x), _run(partial, x), rtol=0, atol=1e-5)


def test_seven_bit_weights_rounded_once_from_float(net: onnx.ModelProto, symmetric: onnx.ModelProto) -> None:
    from_float = lower_for_cpu(symmetric, seven_bit=True, float_source=net)
    from_codes = lower_for_cpu(symmetric, seven_bit=True)
    assert from_float.seven_bit == from_float.seven_bit_from_float == 5 and from_codes.seven_bit_from_float == 0
    floats, lowered, twice = _inits(net), _inits(from_float.model), _inits(from_codes.model)
    depthwise = depthwise_weights(symmetric)
    worst_once = worst_twice = 0.0
    for node in from_float.model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in lowered or lowered[node.input[0]].ndim < 2:
            continue
        if node.input[0] in depthwise:  # full range on every CPU (tests/graph/test_saturation.py)
            assert np.array_equal(lowered[node.input[0]], _inits(symmetric)[node.input[0]])
            continue
        conv = next(n for n in net.graph.node if n.op_type in ("Conv", "ConvTranspose")
                    and node.input[0] == f"{n.input[1]}_quantized")
        weight, codes, scale = floats[conv.input[1]], lowered[node.input[0]], lowered[node.input[1]]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * weight.ndim
        shape[axis] = -1
        assert np.abs(codes).max() <= SEVEN_BIT
        step = scale.reshape(shape)
        worst_once = max(worst_once, float((np.abs(codes * step - weight) / step).max()))
        worst_twice = max(worst_twice, float((np.abs(twice[node.input[0]] * step - weight) / step).max()))
    assert worst_once <= 0.5 + 1e-4 < worst_twice  # rounding the INT8 codes again loses up to one more step


def test_vnni_keeps_full_range_weights() -> None:
    assert needs_seven_bit_weights({"avx2", "avx512f", "avx512bw"}, "x86_64")
    for flag in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert not needs_seven_bit_weights({"avx2", flag}, "x86_64")
    assert not needs_seven_bit_weights(set(), "aarch64")


@pytest.mark.parametrize("vnni", [False, True], ids=["no-vnni", "vnni"])
def test_build_takes_seven_bit_float_weights_only_without_vnni(vnni: bool, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever CPU runs this: as build-engine sees a CPU without VNNI, 7-bit weights rounded once from the
    float weights; with VNNI, full-range INT8 weights."""
    fp32 = export_user_model(tmp_path / "net.onnx")
    simulate_cpu(monkeypatch, vnni=vnni)
    out = tmp_path / "int8.onnx"
    result = build_artifact(fp32, out, precision=PRECISIONS["int8"], backend=backend_of("onnxruntime"),
                            calibration=CalibrationOptions(data="synthetic", n=2))
    lowering = json.loads(json.dumps(result.sidecar.build_options))["int8_lowering"]
    artifact = onnx.load(str(out))
    depthwise = depthwise_int8_weights(artifact)
    inits = _inits(artifact)
    weights = [a for name, a in inits.items() if a.dtype == np.int8 and a.ndim == 4 and name not in depthwise]
    assert weights and len(depthwise) == 1
    assert all(np.abs(inits[name]).max() > SEVEN_BIT for name in depthwise)  # full range on any CPU
    if vnni:
        assert lowering["seven_bit_weights"] == lowering["seven_bit_from_float"] == 0
        assert max(int(np.abs(w).max()) for w in weights) > SEVEN_BIT
    else:
        assert lowering["seven_bit_weights"] == lowering["seven_bit_from_float"] == 5
        assert all(np.abs(w).max() <= SEVEN_BIT for w in weights)


def test_observed_ranges_give_asymmetric_steps(net: onnx.ModelProto, inputs: list[np.ndarray]) -> None:
    """With the ranges the INT8 pass observed recorded in the graph, a pair whose tensor is skewed (here the
    graph input shifted to [-0.5, 3.5]) gets UINT8 steps over [min, max] instead of [-amax, amax]: finer, and
    closer to the float tensor; the TensorRT graph itself stays symmetric."""
    shifted = [(x - x.min()) / (x.max() - x.min()) * 4.0 - 0.5 for x in inputs]
    collection = collect_stats(net, calibration_tensors(net), iter(shifted))
    ranges = {name: amax(stats, MinMax()) for name, stats in collection.stats.items()}
    observed = {name: (s.minimum, s.maximum) for name, s in collection.stats.items()}
    symmetric = QdqBuilder(net, ranges).build().model
    recorded = QdqBuilder(net, ranges, observed=observed).build().model
    assert read_observed_ranges(recorded)["input"] == pytest.approx(observed["input"])
    plain = lower_for_cpu(symmetric, seven_bit=False)
    asymmetric = lower_for_cpu(recorded, seven_bit=False)
    input_q = next(n for n in asymmetric.model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    scale, zero = _inits(asymmetric.model)[input_q.input[1]], _inits(asymmetric.model)[input_q.input[2]]
    assert float(scale) == pytest.approx(4.0 / 255, rel=1e-3) and int(zero) == round(0.5 / (4.0 / 255))
    old_q = next(n for n in plain.model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert float(_inits(plain.model)[old_q.input[1]]) == pytest.approx(3.5 / 127, rel=1e-3)  # symmetric amax 3.5
    assert all(not z.any() for n, z in _inits(recorded).items() if n.endswith("_zero_point"))  # TensorRT's graph
    x = shifted[0]
    error = {name: float(np.mean((_run(m.model, x) - _run(net, x)) ** 2)) for name, m in
             (("symmetric", plain), ("asymmetric", asymmetric))}
    assert error["asymmetric"] < error["symmetric"]


def test_equalized_relu6_min_runs_on_uint8_and_the_conv_fuses(tmp_path: Path) -> None:
    """Cross-layer equalization turns ReLU6 into Relu + a per-channel Min; the lowering moves the Q before the
    Min (a UINT8 Min of the quantized bounds), which gives the same codes, and ONNX Runtime then fuses the
    convolution with its Relu and Q into QLinearConv (with the float Min between them it ran in float)."""
    from deploykit.calib.equalize import Equalization, equalize
    from deploykit.graph.unsigned import quantized_mins, unsigned_activations
    from tests.calib.recovery_models import clip_node, conv, model
    from tests.calib.recovery_models import inputs as recovery_inputs

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((8, 3, 3, 3)) * rng.uniform(0.1, 4, (8, 1, 1, 1))
    first, first_inits = conv("first", "x", "a", weight, rng.standard_normal(8))
    relu6, relu6_inits = clip_node("relu6", "a", "b")
    second, second_inits = conv("second", "b", "y", rng.standard_normal((4, 8, 3, 3)), None)
    equalized = equalize(model([first, relu6, second], first_inits + relu6_inits + second_inits, 3, 4),
                         Equalization())
    assert equalized.pairs and any(n.op_type == "Min" for n in equalized.model.graph.node)
    xs = recovery_inputs(4, 3, scale=2.0)
    collection = collect_stats(equalized.model, calibration_tensors(equalized.model), iter(xs))
    ranges = {name: amax(stats, MinMax()) for name, stats in collection.stats.items()}
    observed = {name: (s.minimum, s.maximum) for name, s in collection.stats.items()}
    graph = QdqBuilder(equalized.model, ranges, observed=observed).build().model
    float_min = unsigned_activations(graph, observed=read_observed_ranges(graph))[0]
    moved = onnx.ModelProto.FromString(float_min.SerializeToString())
    assert quantized_mins(moved) == 1
    assert np.array_equal(_run(moved, xs[0]), _run(float_min, xs[0]))  # the same codes
    for name, lowered in (("float-min", float_min), ("uint8-min", moved)):
        onnx.save(lowered, str(tmp_path / f"{name}.onnx"))
    assert _ops_after_ort(tmp_path / "float-min.onnx", tmp_path).count("QLinearConv") == 0
    assert _ops_after_ort(tmp_path / "uint8-min.onnx", tmp_path).count("QLinearConv") == 1  # the last stays float
    lowered = lower_for_cpu(graph, seven_bit=False).model  # the artifact's lowering moves it too
    producers = {o: n.op_type for n in lowered.graph.node for o in n.output}
    assert [producers[n.input[0]] for n in lowered.graph.node if n.op_type == "Min"] == ["QuantizeLinear"]
