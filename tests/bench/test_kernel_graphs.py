"""The one-op kernel graphs compute what PyTorch computes, in every precision, and the sweep plan is the
issue's: rates 1-36 on DeepLab shapes, separable vs standard on MobileNetV2 / Xception-65 shapes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from deploykit.bench import kernel_graphs as kg
from deploykit.bench.kernels import RATES, KernelCase, plan_cases
from deploykit.evaluate import session_from_onnx

DILATED = [kg.ConvOp(6, 8, 3, dilation=2)]
SEPARABLE = [kg.ConvOp(6, 6, 3, dilation=2, groups=6), kg.ConvOp(6, 4, 1)]


def _input(channels: int, size: int = 11) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((1, channels, size, size), dtype=np.float32)


def _run(model: object, x: np.ndarray) -> np.ndarray:
    session = session_from_onnx(model.SerializeToString(), threads=1)  # type: ignore[attr-defined]
    return np.asarray(session.run(None, {"x": x})[0])


@pytest.mark.parametrize("ops", [DILATED, SEPARABLE], ids=["dilated", "separable"])
def test_float_graphs_match_torch(ops: list[kg.ConvOp]) -> None:
    weights = kg.random_weights(ops, seed=1)
    x = _input(ops[0].cin)
    with torch.inference_mode():
        reference = kg.torch_chain(ops, weights)(torch.from_numpy(x)).numpy()
    fp32 = _run(kg.float_graph(ops, weights, 11, "fp32"), x)
    np.testing.assert_allclose(fp32, reference, atol=1e-5, rtol=1e-5)
    fp16 = _run(kg.float_graph(ops, weights, 11, "fp16"), x.astype(np.float16))
    assert fp16.dtype == np.float16
    assert np.abs(fp16.astype(np.float32) - reference).max() < 1e-2 * np.abs(reference).max()


@pytest.mark.parametrize("ops", [DILATED, SEPARABLE], ids=["dilated", "separable"])
def test_int8_graphs_match_the_quantized_reference(ops: list[kg.ConvOp]) -> None:
    weights = kg.random_weights(ops, seed=1)
    x = _input(ops[0].cin)
    scales = kg.calibrate_scales(ops, weights, x)
    x_q = kg.quantize(x, scales[0])
    reference = kg.int8_reference(ops, weights, scales, x_q)
    signed = _run(kg.int8_graph(ops, weights, 11, scales), x_q)
    assert signed.dtype == np.int8
    diff = np.abs(signed.astype(np.int32) - reference.astype(np.int32))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.98  # rounding of the accumulation at most one step
    # uint8 activations with 7-bit weights: ONNX Runtime's QLinearConv, exact up to rounding
    u_scales = kg.calibrate_scales(ops, weights, x, unsigned=True)
    u_reference = kg.int8_reference(ops, weights, u_scales, x_q, unsigned=True)
    unsigned = _run(kg.int8_graph(ops, weights, 11, u_scales, unsigned=True), kg.as_unsigned(x_q))
    assert unsigned.dtype == np.uint8
    diff_u = np.abs(unsigned.astype(np.int32) - 128 - u_reference.astype(np.int32))
    assert diff_u.max() <= 1 and (diff_u == 0).mean() > 0.98
    # and the quantized result still tracks the float convolution
    with torch.inference_mode():
        real = kg.torch_chain(ops, weights)(torch.from_numpy(x)).numpy()
    dequantized = signed.astype(np.float32) * scales[-1]
    assert np.corrcoef(dequantized.ravel(), real.ravel())[0, 1] > 0.99


def test_counts_by_hand() -> None:
    op = kg.ConvOp(4, 8, 3, dilation=2)
    assert op.padding == 2
    assert op.madds(5) == 25 * 8 * 4 * 9
    assert op.bytes_moved(5, "fp32") == (25 * (4 + 8) + 8 * 4 * 9) * 4
    assert op.bytes_moved(5, "int8") == 25 * 12 + 288
    depthwise = kg.ConvOp(16, 16, 3, groups=16)
    assert depthwise.madds(10) == 100 * 16 * 9
    separable = KernelCase("separable", "x", "separable", 16, 32, 10, 1)
    assert separable.madds() == 100 * 16 * 9 + 100 * 16 * 32


def test_sweep_plans() -> None:
    full = plan_cases()
    dilated = [c for c in full if c.suite == "dilated"]
    assert sorted({c.dilation for c in dilated}) == list(RATES) == [1, 2, 4, 6, 12, 18, 24, 36]
    assert {c.size for c in dilated} == {33, 65, 129}
    assert min(c.cin for c in dilated) == 256 and max(c.cin for c in dilated) == 2048
    separable = [c for c in full if c.suite == "separable"]
    assert {c.variant for c in separable} == {"separable", "standard"}
    assert any("MobileNetV2" in c.shape for c in separable) and any("Xception" in c.shape for c in separable)
    quick = plan_cases(quick=True)
    assert 0 < len(quick) < len(full) / 4
    assert plan_cases(suites=["separable"]) == separable


def test_the_int8_graph_is_tensorrts_form_and_int8u8_is_onnxruntimes() -> None:
    """TensorRT's IDequantizeLayer takes INT8/FP8/INT4/FP4 only (NvInfer.h): the int8 graph keeps its bias float;
    the int8u8 graph (ONNX Runtime's QOperator form) dequantizes an int32 bias."""
    weights = kg.random_weights(DILATED, seed=1)
    scales = kg.calibrate_scales(DILATED, weights, _input(6))

    def dequantized_types(model: object) -> set[int]:
        inits = {i.name: i.data_type for i in model.graph.initializer}  # type: ignore[attr-defined]
        return {inits[n.input[0]] for n in model.graph.node  # type: ignore[attr-defined]
                if n.op_type == "DequantizeLinear" and n.input[0] in inits}

    assert dequantized_types(kg.int8_graph(DILATED, weights, 11, scales)) == {onnx.TensorProto.INT8}
    assert onnx.TensorProto.INT32 in dequantized_types(kg.int8_graph(DILATED, weights, 11, scales, unsigned=True))
