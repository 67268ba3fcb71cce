"""Output heads (`deploykit export --head`): an ArgMax class map and a per-image min-max normalisation, checked
against numpy on real ONNX Runtime sessions; the parity helper compares a class map with logits directly, and
the TensorRT lint knows how ArgMax is parsed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from deploykit.errors import ExportError
from deploykit.graph.heads import apply_head, head_of
from deploykit.graph.lint import lint_model
from deploykit.metrics.scores import task_metrics
from deploykit.parity.compare import ParitySettings, run_parity
from deploykit.parity.inputs import resolve_inputs
from deploykit.targets.resolve import open_target
from tests.fixtures.user_models import tiny_segmenter
from tests.graph import graphs


def _segmenter() -> onnx.ModelProto:
    buffer = io.BytesIO()
    axes = {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}}
    torch.onnx.export(tiny_segmenter(), (torch.randn(1, 3, 32, 32),), buffer, dynamo=False,  # type: ignore[arg-type]
                      opset_version=18, input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_argmax_head_returns_the_class_map_of_the_logits() -> None:
    plain = _segmenter()
    x = np.random.default_rng(0).standard_normal((2, 3, 40, 48)).astype(np.float32)
    logits = _run(plain, x)
    headed = onnx.ModelProto.FromString(plain.SerializeToString())
    result = apply_head(headed, "argmax", "segmentation", 3)  # its Resize hides the class count from inference
    labels = _run(result.model, x)
    assert labels.dtype == np.uint8 and labels.shape == (2, 40, 48)
    np.testing.assert_array_equal(labels, np.argmax(logits, axis=1))
    assert result.model.graph.output[0].name == "output" and head_of(result.model) == "argmax"
    assert head_of(plain) is None and "12x fewer output bytes" in result.note  # 3 classes x 4 bytes -> 1 byte


def test_argmax_head_over_more_than_256_classes_is_int32() -> None:
    model = graphs.model([helper.make_node("Identity", ["x"], ["y"])], inputs=(("x", [1, 300, 2, 3]),))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 300, 2, 3]))
    x = np.random.default_rng(1).standard_normal((1, 300, 2, 3)).astype(np.float32)
    labels = _run(apply_head(model, "argmax", None, None).model, x)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, np.argmax(x, axis=1))


def test_heads_refuse_the_wrong_task_and_unknown_names() -> None:
    model = graphs.model([helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(ExportError, match="for segmentation models"):
        apply_head(model, "argmax", "saliency", 1)
    with pytest.raises(ExportError, match="unknown head"):
        apply_head(model, "softmax", "segmentation", 3)
    dynamic = graphs.model([helper.make_node("Identity", ["x"], ["y"])], inputs=(("x", ["n", "c", "h", "w"]),))
    with pytest.raises(ExportError, match="class axis"):
        apply_head(dynamic, "argmax", "segmentation", None)  # dynamic channels, no num_classes


def test_normalize_head_scales_each_image_to_0_1_once() -> None:
    model = graphs.model([helper.make_node("Identity", ["x"], ["y"])], inputs=(("x", ["n", 1, "h", "w"]),))
    x = np.random.default_rng(2).standard_normal((2, 1, 6, 5)).astype(np.float32) * [[[[3.0]]], [[[0.5]]]]
    result = apply_head(model, "normalize", "saliency", 1)
    got = _run(result.model, x.astype(np.float32))
    shifted = x - x.min(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(got, shifted / (1e-8 + shifted.max(axis=(1, 2, 3), keepdims=True)), rtol=1e-5)
    again = apply_head(result.model, "normalize", "saliency", 1)
    assert "already" in again.note and len(again.model.graph.node) == len(result.model.graph.node)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_lint_names_how_tensorrt_parses_argmax() -> None:
    headed = apply_head(_segmenter(), "argmax", "segmentation", 3).model
    report = lint_model(headed)
    found = [f for f in report.findings if f.op == "ArgMax"]
    assert [f.rule for f in found] == ["argmax-topk"] and report.ok
    assert "INT64" in found[0].why and "FLOAT or HALF" in found[0].why and "nothing to do" not in found[0].fix
    # TensorRT converts to UINT8 only from FLOAT/HALF (NvInferRuntimeBase.h): the head goes through float
    producers = {o: n for n in headed.graph.node for o in n.output}
    to_bytes = producers[headed.graph.output[0].name]
    assert to_bytes.op_type == "Cast" and producers[to_bytes.input[0]].op_type == "Cast"
    on_bytes = graphs.model([helper.make_node("ArgMax", ["x"], ["y"], axis=1)], elem=TensorProto.UINT8)
    assert any(f.rule == "argmax-uint8" and f.severity == "error" for f in lint_model(on_bytes).findings)


def test_lint_refuses_integer_indices_cast_straight_to_uint8() -> None:
    """The first `--head argmax`: ArgMax (INT64) -> Cast(UINT8), which TensorRT refuses."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 4])
    nodes = [helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0, name="argmax"),
             helper.make_node("Cast", ["i"], ["y"], to=TensorProto.UINT8, name="to_bytes")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])
    report = lint_model(model)
    errors = [f for f in report.errors if f.rule == "cast-uint8"]
    assert not report.ok and len(errors) == 1 and "Cast from INT64 to UINT8" in errors[0].why
    assert "see the cast-uint8 error" in next(f.fix for f in report.findings if f.rule == "argmax-topk")


def test_task_metrics_compare_a_class_map_with_logits() -> None:
    logits = np.random.default_rng(3).standard_normal((2, 4, 8, 8)).astype(np.float32)
    labels = np.argmax(logits, axis=1).astype(np.uint8)
    assert task_metrics("segmentation", logits, labels) == {"pixel_agreement": 1.0, "miou": 1.0, "miou_major": 1.0}
    labels[0, 0, :4] = (labels[0, 0, :4] + 1) % 4
    assert task_metrics("segmentation", logits, labels)["pixel_agreement"] == pytest.approx(1 - 4 / 128)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_parity_of_a_class_map_against_logits(tmp_path: Path) -> None:
    plain = _segmenter()
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    onnx.save(apply_head(onnx.ModelProto.FromString(plain.SerializeToString()), "argmax", "segmentation",
                         3).model, str(tmp_path / "head.onnx"))
    reference, candidate = open_target(str(tmp_path / "plain.onnx")), open_target(str(tmp_path / "head.onnx"))
    result = run_parity(reference, [candidate], resolve_inputs([reference, candidate], random=2,
                                                                input_shape=(1, 3, 32, 32)),
                        ParitySettings())
    metrics = result.candidates[0].outputs[0].metrics
    assert result.passed and metrics["pixel_agreement"] == 1.0 and "cosine" not in metrics
