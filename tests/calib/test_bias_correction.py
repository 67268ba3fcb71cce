"""Bias correction: the quantized layer's mean output, per channel, is the float layer's again."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from deploykit.calib.bias_correction import corrected_bias, measure_shifts
from deploykit.calib.collect import collect_stats
from deploykit.calib.methods import MinMax, amax
from deploykit.calib.qdq import QdqBuilder, calibration_tensors
from deploykit.evaluate import session_from_onnx
from tests.calib.recovery_models import conv, inputs, model


def _depthwise() -> onnx.ModelProto:
    """One depthwise 3x3 conv whose weights sit a third of an INT8 step off the grid in the same direction:
    nearest rounding moves every channel's mean output (the inputs have a non-zero mean)."""
    rng = np.random.default_rng(0)
    channels = 6
    weight = rng.uniform(0.2, 1.0, (channels, 1, 3, 3))
    weight[:, 0, 0, 0] = 1.0  # the channel's max |w|: the INT8 step is 1 / 127
    weight[:, 0, 1:, :] = np.round(weight[:, 0, 1:, :] * 127) / 127 + 0.33 / 127  # rounds down by a third
    node, inits = conv("dw", "x", "y", weight, rng.standard_normal(channels), group=channels)
    return model([node], inits, channels, channels)


def _mean_error(qdq: onnx.ModelProto, reference: onnx.ModelProto, xs: list[np.ndarray]) -> np.ndarray:
    """Per-channel mean of (float output - quantized output) over `xs`."""
    runs = [session_from_onnx(m.SerializeToString(), optimization="disable") for m in (reference, qdq)]
    diffs = [runs[0].run(None, {"x": x})[0] - runs[1].run(None, {"x": x})[0] for x in xs]
    return np.mean(np.concatenate(diffs), axis=(0, 2, 3))


def test_bias_correction_moves_the_mean_error_to_zero() -> None:
    source = _depthwise()
    calibration = inputs(8, 6, (48, 48), shift=1.0)
    stats = collect_stats(source, calibration_tensors(source), iter(calibration)).stats
    builder = QdqBuilder(source, {name: amax(s, MinMax()) for name, s in stats.items()}, quantize_outputs=False)
    plain = builder.build()
    before = _mean_error(plain.model, source, calibration)
    weight = numpy_helper.to_array(next(i for i in source.graph.initializer if i.name == "dw.weight"))
    bias = numpy_helper.to_array(next(i for i in source.graph.initializer if i.name == "dw.bias"))
    shifts = measure_shifts(plain.model, {"dw": weight}, ["dw"], calibration)
    np.testing.assert_allclose(shifts["dw"], before, rtol=1e-3, atol=1e-6)  # it measures what it corrects
    builder.biases = {"dw": corrected_bias(bias, shifts["dw"])}
    after = _mean_error(builder.build().model, source, calibration)
    assert np.all(np.abs(before) > 0.004)  # the shift is real: ~ 6 weights x 0.33 steps x mean input / 127
    assert np.all(np.abs(after) < 0.02 * np.abs(before))
    held_out = inputs(8, 6, (48, 48), shift=1.0, seed=1)  # and carries over to other inputs of the same kind
    assert np.all(np.abs(_mean_error(builder.build().model, source, held_out)) < 0.2 * np.abs(before))


def test_a_conv_without_bias_gets_one() -> None:
    rng = np.random.default_rng(1)
    node, inits = conv("c", "x", "y", rng.standard_normal((4, 3, 3, 3)), None)
    source = model([node], inits, 3, 4)
    calibration = inputs(4, 3, shift=0.5)
    stats = collect_stats(source, calibration_tensors(source), iter(calibration)).stats
    builder = QdqBuilder(source, {name: amax(s, MinMax()) for name, s in stats.items()}, quantize_outputs=False)
    weight = numpy_helper.to_array(inits[0])
    shifts = measure_shifts(builder.build().model, {"c": weight}, ["c"], calibration)
    builder.biases = {"c": corrected_bias(None, shifts["c"])}
    corrected = builder.build().model
    conv_node = next(n for n in corrected.graph.node if n.op_type == "Conv")
    assert len(conv_node.input) == 3
    assert np.all(np.abs(_mean_error(corrected, source, calibration)) < 1e-4 + 1e-2 * np.abs(shifts["c"]))
