"""The budget's Evaluator takes each input's reference labels once, and each try's candidate labels once per input,
with the same scores as metrics computed afresh."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploykit.evaluate import session_from_onnx
from deploykit.metrics import pair
from deploykit.metrics.scores import task_metrics
from deploykit.precision.budget import Evaluator


def _segmenter(weights: np.ndarray) -> bytes:
    conv = helper.make_node("Conv", ["x", "w"], ["y"])
    graph = helper.make_graph([conv], "seg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(weights.astype(np.float32), "w")])
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def test_reference_labels_are_taken_once_and_scores_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 3, 1, 1))
    inputs = [rng.normal(size=(1, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    evaluator = Evaluator(_segmenter(weights), inputs, "segmentation", threads=1)
    calls = []
    original = pair.class_labels
    monkeypatch.setattr(pair, "class_labels", lambda output: calls.append(1) or original(output))
    candidates = [weights + rng.normal(scale=0.3, size=weights.shape) for _ in range(2)]
    for candidate in candidates:
        calls.clear()
        scores = evaluator.score(_segmenter(candidate))
        assert len(calls) == len(inputs)  # the candidate's labels, once per input; the reference's were kept
        outputs = _outputs(candidate, inputs)
        fresh = [task_metrics("segmentation", ref[0], out) for ref, out in zip(evaluator.references, outputs,
                                                                                 strict=True)]
        assert scores["pixel_agreement"] == pytest.approx(np.mean([f["pixel_agreement"] for f in fresh]))
        assert scores["pixel_agreement"] < 1.0  # the candidates differ: the test can see a wrong reuse


def _outputs(weights: np.ndarray, inputs: list[np.ndarray]) -> list[np.ndarray]:
    session = session_from_onnx(_segmenter(weights), threads=1)
    return [session.run(None, {"x": x})[0] for x in inputs]


def test_a_fork_keeps_the_parent_free_of_what_it_derives() -> None:
    parent, reference, candidate = pair.Shared(), np.zeros((1, 2, 2, 2)), np.ones((1, 2, 2, 2))
    parent.labels(reference)
    child = parent.fork()
    assert child.labels(reference) is parent.labels(reference)
    child.labels(candidate)
    assert len(parent._kept) == 1 and len(child._kept) == 2
