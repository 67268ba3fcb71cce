"""The budget search ranks nodes on half-size held-out inputs where the graph takes any size."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from deploykit.backends.base import backend_of
from deploykit.precision.passes import RANK_INPUTS, _rank_evaluator
from tests.fixtures.precision_models import resize_graph

ORT = backend_of("onnxruntime")


def _dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in (*model.graph.input, *model.graph.output):
        for axis in (2, 3):
            value.type.tensor_type.shape.dim[axis].dim_param = f"d{axis}"
    return model


def _inputs(count: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, size, size)).astype(np.float32) for _ in range(count)]


def test_a_graph_of_any_size_is_ranked_on_the_first_held_out_inputs_at_half_size() -> None:
    model = _dynamic(resize_graph("linear", "half_pixel", "scales"))
    ranker = _rank_evaluator(model, _inputs(4, 256), None, ORT, 1, lambda _m: None)
    assert ranker is not None
    assert len(ranker.inputs) == RANK_INPUTS and ranker.inputs[0].shape == (1, 3, 128, 128)
    assert ranker.references[0][0].shape == (1, 2, 256, 256)  # the FP32 model's outputs at that size


def test_full_size_ranking_for_fixed_sizes_small_inputs_and_graphs_that_fail_smaller() -> None:
    static = resize_graph("linear", "half_pixel", "scales")
    assert _rank_evaluator(static, _inputs(2, 256), None, ORT, 1, lambda _m: None) is None
    assert _rank_evaluator(_dynamic(static), _inputs(2, 254), None, ORT, 1, lambda _m: None) is None  # halves < 128
    fixed = numpy_helper.from_array(np.ones((1, 3, 256, 256), np.float32), "bias")
    graph = helper.make_graph([helper.make_node("Add", ["input", "bias"], ["output"], name="add")], "fixed_add",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              initializer=[fixed])
    notes: list[object] = []
    added = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert _rank_evaluator(added, _inputs(2, 256), None, ORT, 1, notes.append) is None
    assert any("ranking at full size" in str(note) for note in notes)


def test_the_ranking_scores_as_the_backend_computes() -> None:
    """TensorRT's form is scored without ONNX Runtime's WeightBiasQuantization (Backend.scored_without), in the
    ranking as in the search itself."""
    model = _dynamic(resize_graph("linear", "half_pixel", "scales"))
    trt = _rank_evaluator(model, _inputs(2, 256), None, backend_of("tensorrt"), 1, lambda _m: None)
    ort = _rank_evaluator(model, _inputs(2, 256), None, ORT, 1, lambda _m: None)
    assert trt is not None and ort is not None
    assert trt.disabled_optimizers == ("WeightBiasQuantization",) and ort.disabled_optimizers == ()
