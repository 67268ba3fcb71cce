"""Verification against PyTorch: a graph that zeroes a corner is caught, and PyTorch's outputs are reused only
for equal inputs. Real ONNX Runtime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.export.results import Tolerance
from deploykit.export.verify import verify_against_torch
from deploykit.zoo.sources import LoadedModel, load_model

FIXTURES = "tests.fixtures.user_models"


def test_verification_catches_an_onnx_graph_that_zeroes_a_corner() -> None:
    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1.0

    shape = (1, 3, 512, 512)
    mask = np.ones(shape, dtype=np.float32)
    mask[:, 0, :2, :2] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "mask"], ["output"])], "corner",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(shape))],
        [onnx.numpy_helper.from_array(mask, "mask")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    spec = load_model(f"{FIXTURES}:tiny_segmenter").spec
    checks = verify_against_torch(LoadedModel(Identity(), spec), model.SerializeToString(), [shape], Tolerance())
    metrics = checks[0].outputs["output"]
    # Few enough elements for the count rule and the cosine; caught by their size.
    assert metrics.beyond_tol <= Tolerance().max_outliers and metrics.cosine >= Tolerance().min_cosine
    assert not checks[0].passed


def test_kept_pytorch_outputs_are_reused_only_for_the_same_inputs(tmp_path: Path) -> None:
    loaded = load_model(f"{FIXTURES}:tiny_segmenter")
    onnx_from_torch(loaded, tmp_path / "m.onnx", input_shape=(1, 3, 32, 32), simplify=False)
    graph = (tmp_path / "m.onnx").read_bytes()
    model = loaded.module
    calls: list[int] = []
    model.register_forward_hook(lambda *_: calls.append(1))
    kept: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    shapes = [(1, 3, 32, 32), (2, 3, 32, 32)]
    first = verify_against_torch(LoadedModel(model, loaded.spec), graph, shapes, Tolerance(), torch_outputs=kept)
    again = verify_against_torch(LoadedModel(model, loaded.spec), graph, shapes, Tolerance(), torch_outputs=kept)
    assert len(calls) == 2 and first == again and all(c.passed for c in again)
    verify_against_torch(LoadedModel(model, loaded.spec), graph, shapes, Tolerance(), seed=1, torch_outputs=kept)
    assert len(calls) == 4  # other inputs: PyTorch runs again
    static = verify_against_torch(LoadedModel(model, loaded.spec), graph, [shapes[0]] * 2, Tolerance(),
                                  torch_outputs=kept)  # --static checks one shape twice, on two inputs
    assert len(calls) == 5 and all(c.passed for c in static)
