"""ONNX unpooling: finding what TensorRT rejects, and rewriting it from supported operators (ORT before == after)."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from deploykit.errors import ExportError
from deploykit.evaluate import session_from_onnx
from deploykit.graph.unpool import find_unsupported_unpooling, rewrite_unpooling

DIMS = ["n", "c", "h", "w"]


def tie_heavy(shape: Sequence[int], seed: int) -> np.ndarray:
    """ReLU'd, coarsely quantised values: many windows hold repeated maxima, often all zeros."""
    rng = np.random.default_rng(seed)
    return np.maximum(np.round(rng.standard_normal(shape) * 2) / 2, 0).astype(np.float32)


def make_model(nodes: list[onnx.NodeProto], outputs: Sequence[tuple[str, int]] = (("y", TensorProto.FLOAT),),
               opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, DIMS)],
                              [helper.make_tensor_value_info(n, t, DIMS) for n, t in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def pool_unpool(kernel: tuple[int, int] = (2, 2), stride: tuple[int, int] | None = None,
                with_shape: bool = True) -> onnx.ModelProto:
    """x -> MaxPool(Indices) -> Neg -> MaxUnpool(output_shape = x's shape), as converters emit SegNet/DeconvNet."""
    stride = stride or kernel
    unpool_inputs = ["q", "idx", "shape"] if with_shape else ["q", "idx"]
    return make_model([
        helper.make_node("MaxPool", ["x"], ["p", "idx"], name="pool", kernel_shape=kernel, strides=stride),
        helper.make_node("Neg", ["p"], ["q"], name="neg"),
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("MaxUnpool", unpool_inputs, ["y"], name="unpool", kernel_shape=kernel, strides=stride),
    ])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = session_from_onnx(model.SerializeToString())
    return [np.asarray(o) for o in session.run(None, {"x": x})]


def assert_rewritten_equal(model: onnx.ModelProto, shapes: Sequence[Sequence[int]]) -> onnx.ModelProto:
    assert find_unsupported_unpooling(model)
    rewritten = rewrite_unpooling(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert find_unsupported_unpooling(rewritten) == []
    for i, shape in enumerate(shapes):
        x = tie_heavy(shape, seed=i)
        for before, after in zip(run(model, x), run(rewritten, x), strict=True):
            assert before.shape == after.shape and before.dtype == after.dtype
            assert np.abs(before.astype(np.float64) - after.astype(np.float64)).max() <= 1e-5
    return rewritten


def test_finds_maxunpool_and_indices_everywhere() -> None:
    model = pool_unpool()
    plain = helper.make_node("MaxPool", ["x"], ["p2"], name="plain", kernel_shape=[2, 2], strides=[2, 2])
    branch = helper.make_graph(
        [helper.make_node("MaxUnpool", ["p", "idx"], ["b"], name="in_branch", kernel_shape=[2, 2], strides=[2, 2])],
        "then", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    model.graph.node.extend([plain, helper.make_node("If", ["cond"], ["z"], name="if", then_branch=branch,
                                                     else_branch=branch)])
    model.functions.append(helper.make_function(
        "custom", "Unpool", ["a"], ["b", "i"],
        [helper.make_node("MaxPool", ["a"], ["b", "i"], name="fn_pool", kernel_shape=[2, 2])],
        [helper.make_opsetid("", 18)]))
    found = {(n.name, n.op_type, n.graph) for n in find_unsupported_unpooling(model)}
    assert found == {("pool", "MaxPool", "main"), ("unpool", "MaxUnpool", "main"),
                     ("in_branch", "MaxUnpool", "if.then_branch"), ("in_branch", "MaxUnpool", "if.else_branch"),
                     ("fn_pool", "MaxPool", "function custom:Unpool")}
    assert all("TensorRT" in n.reason for n in find_unsupported_unpooling(model))


@pytest.mark.parametrize("shape", [(1, 2, 8, 8), (2, 3, 7, 9), (1, 1, 2, 3)])
def test_maxunpool_with_output_shape_becomes_the_mask_formulation(shape: tuple[int, ...]) -> None:
    rewritten = assert_rewritten_equal(pool_unpool(), [shape, (3, 2, 12, 10)])
    ops = [n.op_type for n in rewritten.graph.node]
    assert "MaxUnpool" not in ops and "ScatterND" not in ops and "Range" not in ops  # no index arithmetic needed
    assert "Pad" in ops  # the floor-mode remainder is zero-padded to output_shape


def test_maxunpool_without_output_shape() -> None:
    assert_rewritten_equal(pool_unpool(with_shape=False), [(1, 2, 8, 8), (2, 3, 6, 10)])


@pytest.mark.parametrize("kernel", [(2, 2), (3, 3), (1, 1), (2, 3)])
def test_indices_used_elsewhere_are_recomputed_exactly(kernel: tuple[int, int]) -> None:
    model = make_model(
        [helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=kernel, strides=kernel)],
        outputs=[("y", TensorProto.FLOAT), ("idx", TensorProto.INT64)])
    rewritten = assert_rewritten_equal(model, [(2, 3, 12, 12), (1, 2, 7, 11)])
    assert [o.name for o in rewritten.graph.output] == ["y", "idx"]


def test_overlapping_pools_are_left_and_still_reported() -> None:
    model = pool_unpool(kernel=(3, 3), stride=(2, 2))
    rewritten = rewrite_unpooling(model)
    assert {n.name for n in find_unsupported_unpooling(rewritten)} == {"pool", "unpool"}
    assert [n.op_type for n in rewritten.graph.node] == [n.op_type for n in model.graph.node]


def test_old_opsets_are_refused_with_a_fix() -> None:
    model = helper.make_model(pool_unpool().graph, opset_imports=[helper.make_opsetid("", 11)])
    with pytest.raises(ExportError, match="opset 18"):
        rewrite_unpooling(model)


class _SegNetLike(torch.nn.Module):
    """conv -> ReLU -> max-pool with indices -> conv -> MaxUnpool2d -> conv: what the dynamo exporter
    turns into MaxPool(Indices) + ScatterND."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.mid = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.dec = torch.nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.enc(x))
        pooled, indices = torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True)
        up = torch.nn.functional.max_unpool2d(self.mid(pooled), indices, (2, 2), (2, 2), output_size=x.shape[-2:])
        out: torch.Tensor = self.dec(up)
        return out


def test_dynamo_export_of_maxunpool2d_is_rewritten(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = _SegNetLike().eval()
    path = tmp_path / "segnet_like.onnx"
    dim = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (torch.randn(1, 3, 16, 16),), dynamo=True, opset_version=18,
                                    input_names=["x"], output_names=["y"],
                                    dynamic_shapes=({0: dim, 2: dim, 3: dim},), optimize=True)
        assert program is not None
        program.save(str(path))
    exported = onnx.load(str(path))
    assert {n.op_type for n in find_unsupported_unpooling(exported)} == {"MaxPool"}
    assert_rewritten_equal(exported, [(1, 3, 16, 16), (2, 3, 24, 20)])
    # and the ONNX graphs still compute what PyTorch does
    x = tie_heavy((2, 3, 24, 20), seed=9)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    assert np.abs(run(rewrite_unpooling(exported), x)[0] - expected).max() <= 1e-4
