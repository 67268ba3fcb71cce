"""The ONNX multiply-add counter agrees with deploykit.zoo.flops on a model using every counted operator."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from torch import nn

from deploykit.graph import macs
from deploykit.graph.macs import count_onnx_macs
from deploykit.zoo.flops import count_complexity
from tests.fixtures.graphs import relu_chain


class Mixed(nn.Module):
    """Strided, dilated, grouped and depthwise convs, a transposed conv, Linear on 2-D (Gemm) and on
    tokens (MatMul); two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.tokens = nn.Linear(8, 6)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.stem(x))
        y = self.depthwise(self.grouped(self.dilated(y)))
        tokens = self.tokens(y.flatten(2).transpose(1, 2))  # N, HW, 6 -> MatMul
        return self.up(y), self.head(tokens.mean(dim=1))  # N, 6 -> Gemm


@pytest.fixture(scope="module")
def mixed_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = Mixed().eval()
    path = tmp_path_factory.mktemp("macs") / "mixed.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=18,
                          input_names=["input"], output_names=["seg", "logits"],
                          dynamic_axes={"input": axes, "seg": axes, "logits": {0: "batch"}})
    return path, model


def test_counts_match_the_module_counter_at_another_shape(mixed_onnx: tuple[Path, nn.Module]) -> None:
    path, model = mixed_onnx
    shape = (2, 3, 48, 40)
    counted = count_onnx_macs(path, shape)
    expected = count_complexity(model, shape).madds
    assert counted.madds == expected
    assert not counted.unresolved
    assert set(counted.by_op) == {"Conv", "ConvTranspose", "MatMul", "Gemm"}
    assert sum(counted.by_node.values()) == expected and len(counted.by_node) >= len(counted.by_op)
    assert counted.gflops == pytest.approx(2 * expected / 1e9)
    assert count_onnx_macs(path, (1, 3, 32, 32)).madds == count_complexity(model, (1, 3, 32, 32)).madds


def test_shapes_inference_cannot_give_are_measured_by_a_run(mixed_onnx: tuple[Path, nn.Module],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path, model = mixed_onnx
    known = macs._known_shapes
    monkeypatch.setattr(macs, "_known_shapes", lambda m: {k: v for k, v in known(m).items()
                                                          if k.startswith("onnx::") or "weight" in k})
    counted = count_onnx_macs(path, (1, 3, 24, 24))
    assert counted.madds == count_complexity(model, (1, 3, 24, 24)).madds


def test_unresolved_nodes_are_reported_not_guessed(mixed_onnx: tuple[Path, nn.Module],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = mixed_onnx
    monkeypatch.setattr(macs, "_known_shapes", lambda m: {})
    monkeypatch.setattr(macs, "_measure_shapes", lambda *a: {})
    counted = count_onnx_macs(path, (1, 3, 24, 24))
    assert counted.madds == 0
    assert len(counted.unresolved) == 7


@pytest.mark.parametrize("length", [1, 2, 5])
def test_activation_bytes_holds_a_node_s_inputs_and_outputs_and_frees_the_rest(length: int) -> None:
    """The input and the output are held throughout; an intermediate tensor lives from its node until its last
    reader: in a chain, one node's input and output at once besides them, whatever its length."""
    one = 3 * 4 * 5 * 5 * 4  # a tensor at batch 3, in bytes
    intermediates = min(length - 1, 1)
    assert macs.activation_bytes(relu_chain(length), (3, 4, 5, 5)) == one * (2 + intermediates)
    assert macs.arena_bytes(relu_chain(length), (3, 4, 5, 5)) == macs.ARENA_GROWTH * one * (2 + intermediates)


@st.composite
def _dags(draw: st.DrawFn) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A random graph of Relu, Add and Concat (channels) over one input (1, c, 4, 4), and each tensor's bytes."""
    channels = {"x": draw(st.integers(1, 4))}
    nodes = []
    for index in range(draw(st.integers(1, 12))):
        names = sorted(channels)
        op = draw(st.sampled_from(["Relu", "Add", "Concat"]))
        a = draw(st.sampled_from(names))
        same = [n for n in names if channels[n] == channels[a]]
        b = draw(st.sampled_from(same if op == "Add" else names))
        out = f"t{index}"
        inputs = [a] if op == "Relu" else [a, b]
        nodes.append(helper.make_node(op, inputs, [out], **({"axis": 1} if op == "Concat" else {})))
        channels[out] = channels[a] + channels[b] if op == "Concat" else channels[a]
    read = {i for n in nodes for i in n.input}
    outputs = [n.output[0] for n in nodes if n.output[0] not in read] or [nodes[-1].output[0]]
    graph = helper.make_graph(nodes, "dag", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                           [1, channels["x"], 4, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), \
        {n: c * 16 * 4 for n, c in channels.items()}


@given(_dags())
@settings(max_examples=60, deadline=None)
def test_activation_bytes_lies_between_what_any_node_holds_and_every_tensor(
        case: tuple[onnx.ModelProto, dict[str, int]]) -> None:
    """Whatever the graph: at least every node's distinct inputs and outputs together, and the graph's input and
    outputs together (held to the end); at most every tensor at once."""
    model, size = case
    peak = macs.activation_bytes(model, (1, size["x"] // 64, 4, 4))
    for node in model.graph.node:
        assert peak >= sum(size[n] for n in {*node.input, *node.output})
    assert peak >= size["x"] + sum(size[o.name] for o in model.graph.output)
    assert peak <= sum(size.values())
