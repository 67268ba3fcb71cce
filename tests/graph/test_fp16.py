"""FP16 pass: Resize and every shape/scale input stay valid (the onnxconverter-common / ORT bugs), the overflow
guard keeps float32 where float16 would overflow, keep lists, I/O types, and ORT parity on a torch export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from deploykit.errors import ConfigConflict
from deploykit.evaluate import session_from_onnx
from deploykit.graph.fp16 import FP16_MAX, fp16_from_onnx
from tests.fixtures.precision_models import RESIZE_CASES, export_user_model, resize_graph


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = session_from_onnx(model.SerializeToString())
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


def _run_all(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = session_from_onnx(model.SerializeToString())
    return [np.asarray(v) for v in session.run(None, {session.get_inputs()[0].name: x})]


def _strict_check(model: onnx.ModelProto) -> onnx.ModelProto:
    onnx.checker.check_model(model, full_check=True)  # also checks topological order
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input,
                                                            *inferred.graph.output)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    for node in model.graph.node:
        if node.op_type == "Constant":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


@pytest.mark.parametrize(("mode", "coordinates", "size_from"), RESIZE_CASES)
@pytest.mark.parametrize("roi", ["empty_constant", "omitted"])
def test_resize_stays_valid_in_every_mode(mode: str, coordinates: str, size_from: str, roi: str) -> None:
    model = resize_graph(mode, coordinates, size_from, roi=roi)
    half = fp16_from_onnx(model).model
    _strict_check(half)
    resize = next(n for n in half.graph.node if n.op_type == "Resize")
    original = next(n for n in model.graph.node if n.op_type == "Resize")
    types = _types(half)
    assert types[resize.input[0]] == TensorProto.FLOAT16  # the data is converted...
    # ...but roi / scales / sizes keep their names and types, and omitted inputs stay omitted (#207, #272, #306)
    assert list(resize.input[1:]) == list(original.input[1:])
    for name in resize.input[1:]:
        if name:
            assert types[name] in (TensorProto.FLOAT, TensorProto.INT64), name
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 10)).astype(np.float32)
    expected, got = _run(model, x), _run(half, x)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=2e-2 * float(np.abs(expected).max()))


def test_shape_arithmetic_stays_float32() -> None:
    """Shape -> Cast(float) -> Mul -> Cast(int64) computes sizes; rounding it to float16 would change sizes."""
    half = fp16_from_onnx(resize_graph("linear", "align_corners", "shape_sizes")).model
    mul = next(n for n in half.graph.node if n.name == "size_mul")
    assert list(mul.input) == ["shape_f", "factor"]
    assert _types(half)["size_f"] == TensorProto.FLOAT


def test_overflow_guard_keeps_float32_where_float16_overflows() -> None:
    model = resize_graph("linear", "half_pixel", "scales")
    for init in model.graph.initializer:  # scale the first conv so its output exceeds float16's range
        if init.name == "w1":
            array = onnx.numpy_helper.to_array(init) * 4e4
            init.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), "w1"))
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 10)).astype(np.float32)
    expected = _run(model, x)
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    probe.graph.output.append(onnx.helper.make_tensor_value_info("a", TensorProto.FLOAT, None))
    conv_out = _run_all(probe, x)[1]
    with np.errstate(over="ignore"):
        assert np.isinf(conv_out.astype(np.float16)).any()  # what float16 storage of `a` would hold
    naive = fp16_from_onnx(model)  # no calibration data: only the weights are checked
    # ONNX Runtime's CPU runs float16 ops in float32 and hides the overflow; GPUs and TensorRT do not.
    assert _types(naive.model)["a"] == TensorProto.FLOAT16
    measured = {"a": float(np.abs(conv_out).max()), "b": float(np.abs(conv_out).max())}
    guarded = fp16_from_onnx(model, activation_absmax=measured)
    assert _types(guarded.model)["a"] == TensorProto.FLOAT
    kept = {k.name: k.reason for k in guarded.kept}
    assert {"conv1", "resize", "conv2"} <= set(kept) and "calibration data" in kept["resize"]
    got = _run(guarded.model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3 * float(np.abs(expected).max()))


def test_weights_beyond_float16_range_keep_their_node() -> None:
    model = resize_graph("linear", "half_pixel", "scales")
    for init in model.graph.initializer:
        if init.name == "w2":
            init.CopyFrom(onnx.numpy_helper.from_array(np.full((2, 4, 1, 1), 1e5, np.float32), "w2"))
    result = fp16_from_onnx(model)
    assert [k.name for k in result.kept] == ["conv2"] and str(FP16_MAX)[:4] in result.kept[0].reason


def test_keep_by_name_and_op_type_and_typos_fail() -> None:
    model = resize_graph("linear", "half_pixel", "scales")
    by_type = fp16_from_onnx(model, keep=["Resize"])
    assert [(k.name, k.reason) for k in by_type.kept] == [("resize", "kept by --keep-fp32")]
    _strict_check(by_type.model)
    by_name = fp16_from_onnx(model, keep=["conv2"])
    assert [k.name for k in by_name.kept] == ["conv2"]
    with pytest.raises(ConfigConflict, match="Reshap"):
        fp16_from_onnx(model, keep=["Reshap"])


def test_fp16_io_declares_float16_inputs_and_outputs() -> None:
    half = fp16_from_onnx(resize_graph("nearest", "asymmetric", "scales"), fp16_io=True).model
    _strict_check(half)
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    x = np.random.default_rng(3).standard_normal((1, 3, 8, 10)).astype(np.float16)
    assert _run(half, x).dtype == np.float16


def test_torch_export_runs_at_two_sizes_within_fp16_tolerance(tmp_path: Path) -> None:
    """A torch export with BN, depthwise+ReLU6 (Clip), Pad, ConvTranspose, Concat and every resize flavour."""
    source = onnx.load(str(export_user_model(tmp_path / "net.onnx")))
    result = fp16_from_onnx(source)
    _strict_check(result.model)
    assert result.kept == [] and result.converted > 10
    ops = {n.op_type for n in result.model.graph.node}
    assert {"Resize", "Pad", "ConvTranspose", "Clip", "Concat"} <= ops
    rng = np.random.default_rng(4)
    for shape in ((1, 3, 32, 40), (2, 3, 48, 64)):  # dynamic batch/height/width keep working
        x = rng.standard_normal(shape).astype(np.float32)
        expected, got = _run(source, x), _run(result.model, x)
        cosine = float(np.sum(expected * got) / (np.linalg.norm(expected) * np.linalg.norm(got)))
        assert cosine > 0.9999
        assert (expected.argmax(1) == got.argmax(1)).mean() > 0.99
