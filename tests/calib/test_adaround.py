"""AdaRound: the weights stay INT8 codes on the per-channel grid (written as INT8 initializers +
DequantizeLinear) and the quantized layer reproduces its float output better than nearest rounding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from deploykit.calib.adaround import AdaRound, adaround
from deploykit.calib.collect import collect_stats
from deploykit.calib.methods import MinMax, amax
from deploykit.calib.qdq import QdqBuilder, calibration_tensors
from deploykit.evaluate import session_from_onnx
from tests.calib.recovery_models import conv, inputs, model


@pytest.fixture(scope="module")
def layer() -> onnx.ModelProto:
    """A 3x3 conv whose every output channel has one large weight: the per-channel INT8 step (max |w| / 127)
    is coarse for the others, so the weights' rounding dominates the layer's error."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((6, 4, 3, 3)) * 0.05
    weight[:, 0, 0, 0] = 1.0
    node, inits = conv("c", "x", "y", weight, rng.standard_normal(6))
    return model([node], inits, 4, 6)


def _builder(source: onnx.ModelProto, calibration: list[np.ndarray]) -> QdqBuilder:
    stats = collect_stats(source, calibration_tensors(source), iter(calibration)).stats
    return QdqBuilder(source, {name: amax(s, MinMax()) for name, s in stats.items()}, quantize_outputs=False)


def _error(qdq: onnx.ModelProto, source: onnx.ModelProto, xs: list[np.ndarray]) -> float:
    runs = [session_from_onnx(m.SerializeToString(), optimization="disable") for m in (source, qdq)]
    return float(np.mean([np.mean((runs[0].run(None, {"x": x})[0] - runs[1].run(None, {"x": x})[0]) ** 2)
                          for x in xs]))


def test_adaround_codes_are_on_the_grid_and_reconstruct_better(layer: onnx.ModelProto) -> None:
    # Inputs with correlated channels (a shared component): rounding errors of weights reading correlated
    # inputs can cancel, which is what AdaRound exploits and nearest rounding ignores.
    calibration = [x + 2.0 * x[:, :1] for x in inputs(12, 4, (16, 16), seed=1)]
    builder = _builder(layer, calibration)
    nearest = builder.build()
    spec = builder.specs(["c"])["c"]
    codes_before, scale = builder.weight_codes(spec)
    weight = numpy_helper.to_array(next(i for i in layer.graph.initializer if i.name == "c.weight"))
    found = adaround(layer, {"c": scale}, {"c": weight}, calibration, AdaRound())
    codes = found["c"]
    assert codes.dtype == np.int8 and codes.shape == weight.shape and np.abs(codes).max() <= 127
    floor = np.floor(weight / scale.reshape(-1, 1, 1, 1))
    assert np.all((codes == floor) | (codes == floor + 1))  # up or down, never further
    assert np.count_nonzero(codes != codes_before) > 0  # some weights rounded the other way
    builder.set_codes(spec, codes)
    rounded = builder.build().model
    inits = {i.name: i for i in rounded.graph.initializer}
    dq = next(n for n in rounded.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
              and inits[n.input[0]].data_type == TensorProto.INT8 and len(inits[n.input[0]].dims) == 4)
    np.testing.assert_array_equal(numpy_helper.to_array(inits[dq.input[0]]), codes)  # INT8 initializer + DQ
    held_out = [x + 2.0 * x[:, :1] for x in inputs(6, 4, (16, 16), seed=2)]
    # the layer's reconstruction error, ||(W~ - W) x||^2 on float inputs: what AdaRound minimizes
    assert _error(_dequantized(layer, codes, scale), layer, calibration) < 0.5 * _error(
        _dequantized(layer, codes_before, scale), layer, calibration)
    assert _error(_dequantized(layer, codes, scale), layer, held_out) < 0.7 * _error(
        _dequantized(layer, codes_before, scale), layer, held_out)
    # and the whole quantized layer (input Q/DQ too) errs less than with nearest rounding
    assert _error(rounded, layer, held_out) < _error(nearest.model, layer, held_out)


def _dequantized(source: onnx.ModelProto, codes: np.ndarray, scale: np.ndarray) -> onnx.ModelProto:
    """`source` with its float weight replaced by codes x scale: only the weights' rounding differs."""
    copy = onnx.ModelProto.FromString(source.SerializeToString())
    for init in copy.graph.initializer:
        if init.name == "c.weight":
            init.CopyFrom(numpy_helper.from_array((codes * scale.reshape(-1, 1, 1, 1)).astype(np.float32), init.name))
    return copy
