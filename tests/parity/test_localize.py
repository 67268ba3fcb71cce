"""--localize: a single deliberately corrupted Conv in a real zoo model is found and named, in FP32, FP16 and
INT8 Q/DQ candidates; module paths come from both exporters' records; pairing survives renamed graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from deploykit.graph.fp16 import fp16_from_onnx
from deploykit.io.images import preprocess, sample_photographs
from deploykit.parity.localize import Localization, localize, module_path, scoped_name_to_module
from deploykit.precision.table import PRECISIONS
from deploykit.types import IMAGENET
from tests.parity.helpers import corrupted_copy, middle_conv, scale_initializer, zoo_target


def _expected_module(conv: onnx.NodeProto, model: onnx.ModelProto) -> str:
    """The module path, checked against the PyTorch model itself: a Conv2d whose weight has the ONNX weight's
    shape (the exporter folds BatchNorm into it, which keeps the shape)."""
    path = module_path(conv)
    target = zoo_target()
    assert target.loaded is not None
    modules = dict(target.loaded.module.named_modules())
    assert isinstance(modules.get(path), nn.Conv2d), path
    weight = next(i for i in model.graph.initializer if i.name == conv.input[1])
    assert tuple(modules[path].weight.shape) == tuple(weight.dims)
    return path


def test_localize_names_the_corrupted_conv_in_the_zoo_model(zoo_onnx: Path, astronaut_65: np.ndarray,
                                                            tmp_path: Path) -> None:
    bad, name = corrupted_copy(zoo_onnx, tmp_path / "bad.onnx")
    found = localize(zoo_onnx, bad, astronaut_65, tolerance=PRECISIONS["fp32"].localize_tolerance)
    assert found.first is not None and found.first.node == name
    assert found.first.op_type == "Conv"
    assert found.first.module == _expected_module(middle_conv(onnx.load(str(zoo_onnx))), onnx.load(str(zoo_onnx)))
    assert found.first.input_error == 0.0 and found.first.error == pytest.approx(3.0, rel=0.05)  # weights x4
    assert found.top[0].node == name and found.top[0].growth > 1000 * found.top[1].growth
    assert found.unmatched == 0 and found.compared > 100


def test_clean_copy_has_no_divergence(zoo_onnx: Path, astronaut_65: np.ndarray) -> None:
    found = localize(zoo_onnx, zoo_onnx, astronaut_65, tolerance=PRECISIONS["fp32"].localize_tolerance)
    assert found.first is None and found.top == []


def test_localize_in_an_fp16_model(zoo_onnx: Path, astronaut_65: np.ndarray, tmp_path: Path) -> None:
    half = fp16_from_onnx(onnx.load(str(zoo_onnx))).model
    conv = middle_conv(onnx.load(str(zoo_onnx)))
    clean = tmp_path / "half.onnx"
    onnx.save(half, str(clean))
    quiet = localize(zoo_onnx, clean, astronaut_65, tolerance=PRECISIONS["fp16"].localize_tolerance)
    assert quiet.first is None  # float16 rounding stays below 1e-2 through this small network
    assert any(row.op_type == "Cast" for row in quiet.top)  # the input cast is where float16 error enters
    half_conv = next(n for n in half.graph.node if n.name == conv.name)
    scale_initializer(half, half_conv.input[1], 4.0)
    bad = tmp_path / "half_bad.onnx"
    onnx.save(half, str(bad))
    found = localize(zoo_onnx, bad, astronaut_65, tolerance=PRECISIONS["fp16"].localize_tolerance)
    assert found.first is not None and found.first.node == conv.name
    assert found.top[0].node == conv.name and found.top[0].module == module_path(conv)


def test_localize_in_an_int8_qdq_model(zoo_onnx: Path, astronaut_65: np.ndarray, tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([astronaut_65])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    qdq = tmp_path / "int8.onnx"
    quantize_static(str(zoo_onnx), str(qdq), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    model = onnx.load(str(qdq))
    conv = middle_conv(onnx.load(str(zoo_onnx)))
    producers = {out: node for node in model.graph.node for out in node.output}
    weight_dq = producers[next(n for n in model.graph.node if n.name == conv.name).input[1]]
    assert weight_dq.op_type == "DequantizeLinear"
    scale_initializer(model, weight_dq.input[1], 4.0)  # corrupt the weight's scale: the int8 weights are intact
    onnx.save(model, str(qdq))
    found = localize(zoo_onnx, qdq, astronaut_65, tolerance=PRECISIONS["int8"].localize_tolerance)
    assert found.top[0].node == conv.name and found.top[0].module == module_path(conv)
    # activation quantisation is measured as its own step, between producer and consumer
    assert any(row.op_type == "QuantizeLinear+DequantizeLinear" for row in found.top)


def _rename_everything(model: onnx.ModelProto) -> None:
    """Rename every node and intermediate tensor, as another exporter or a graph rewriter might."""
    keep = {v.name for v in (*model.graph.input, *model.graph.output)} | {i.name for i in model.graph.initializer}
    renamed: dict[str, str] = {}
    for index, node in enumerate(model.graph.node):
        node.name = f"n{index}"
        for i, out in enumerate(node.output):
            if out not in keep:
                renamed[out] = f"t{index}_{i}"
                node.output[i] = renamed[out]
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)


def test_structural_pairing_through_renamed_nodes_and_inserted_casts(user_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(user_onnx))
    conv = [n for n in model.graph.node if n.op_type == "Conv"][1]
    conv_name = conv.name
    scale_initializer(model, conv.input[1], 3.0)
    _rename_everything(model)
    target = next(n for n in model.graph.node if n.op_type == "Conv" and n.name != "n0")
    # a float32 -> float16 -> float32 round trip in front of the corrupted Conv, as an FP16 pass would insert
    casts = [helper.make_node("Cast", [target.input[0]], ["half"], to=TensorProto.FLOAT16, name="c16"),
             helper.make_node("Cast", ["half"], ["back"], to=TensorProto.FLOAT, name="c32")]
    target.input[0] = "back"
    position = list(model.graph.node).index(target)
    for offset, cast in enumerate(casts):
        model.graph.node.insert(position + offset, cast)
    bad = tmp_path / "renamed.onnx"
    onnx.save(model, str(bad))
    x = preprocess(sample_photographs(("coffee",))[0], IMAGENET, (64, 64))
    found = localize(user_onnx, bad, x, tolerance=1e-2)
    assert found.first is not None and found.first.node == conv_name  # reported with the reference's names
    assert found.first.module == "context.0"
    assert found.unmatched == 0
    assert found.top[0].node == conv_name
    cast = next(row for row in found.top if row.op_type == "Cast+Cast")  # the round trip is its own step
    assert 0 < cast.error < 1e-3 and cast.input_error == 0.0


@pytest.mark.parametrize("name, module", [
    ("/backbone/layer1/layer1.0/conv1/Conv", "backbone.layer1.0.conv1"),
    ("/layer1/layer1.0/downsample/downsample.0/Conv", "layer1.0.downsample.0"),
    ("/encoder/blocks.0/conv/Conv", "encoder.blocks.0.conv"),  # a ModuleList child: the list is never called
    ("/features/features.0/features.0.0/Conv_1", "features.0.0"),  # nested Sequential
    ("/conv/conv/Conv", "conv.conv"),
    ("/Resize", ""),
])
def test_scoped_names_to_module_paths(name: str, module: str) -> None:
    assert scoped_name_to_module(name) == module


def test_dynamo_metadata_gives_the_module_path() -> None:
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="node_Conv_20")
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes",
                            value="['', 'layer1', 'layer1.0', 'layer1.0.bn', '_native_batch_norm_legit_no_training']")
    assert module_path(node) == "layer1.0.bn"
    only_namespace = helper.make_node("Relu", ["y"], ["z"], name="node_relu")
    only_namespace.metadata_props.add(key="namespace", value=": m.Net/head: torch.nn.Conv2d/relu: aten.relu.default")
    assert module_path(only_namespace) == "head"
    assert module_path(helper.make_node("Relu", ["y"], ["z"], name="Relu_3")) == ""


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv1(x)))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()))
        self.layer1 = nn.Sequential(_Block(), _Block())
        self.blocks = nn.ModuleList([_Block()])
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer1(self.stem(x))
        for block in self.blocks:
            y = block(y)
        return self.head(y)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_export_module_paths_exist_in_the_model(tmp_path: Path) -> None:
    net = _Net().eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, opset_version=18)
    modules = dict(net.named_modules())
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    paths = [module_path(n) for n in convs]
    assert len(convs) == 6 and all(isinstance(modules.get(p), nn.Conv2d) for p in paths), paths
    assert "stem.1.0" in paths and "blocks.0.conv1" in paths and "layer1.1.conv1" in paths


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_dynamo_export_module_paths_exist_in_the_model(tmp_path: Path) -> None:
    """The dynamo exporter records name scopes in metadata_props; a Conv that absorbed its BatchNorm carries the
    BatchNorm's scope (the rewriter keeps the later node's record), which names the same block."""
    net = _Net().eval()
    program = torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), dynamo=True, opset_version=18)
    assert program is not None
    path = tmp_path / "net.onnx"
    program.save(str(path))
    modules = dict(net.named_modules())
    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    paths = [module_path(n) for n in convs]
    assert len(convs) == 6 and all(isinstance(modules.get(p), (nn.Conv2d, nn.BatchNorm2d)) for p in paths), paths
    assert {"stem.0", "stem.1.0", "head"} <= set(paths) and "blocks.0.bn" in paths


def _conv_clip_conv(first_weight_scale: float = 1.0, clip: str = "Clip") -> onnx.ModelProto:
    """input -> Conv 'c1' -> Clip 'act' (0, 6) -> Conv 'c2' -> output; `clip` 'Identity' replaces the activation
    under the same node and tensor names, 'drop' removes it (c2 reads c1's output, as a fusing pass leaves it)."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * first_weight_scale,
               rng.standard_normal((4, 4, 3, 3)).astype(np.float32)]
    inits = [onnx.numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)]
    inits += [onnx.numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0))]
    c2_input = "c1_out" if clip == "drop" else "act_out"
    nodes = [helper.make_node("Conv", ["input", "w0"], ["c1_out"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", [c2_input, "w1"], ["output"], name="c2", pads=[1, 1, 1, 1])]
    if clip != "drop":
        inputs = ["c1_out", "lo", "hi"] if clip == "Clip" else ["c1_out"]
        nodes.insert(1, helper.make_node(clip, inputs, ["act_out"], name="act"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_node_replaced_by_another_op_is_named(tmp_path: Path) -> None:
    """The candidate computes the activation's tensor with another op (Identity here; deploykit's INT8 pass writes
    Clip as Relu + Min): its output is still compared under its name, so the activation is named, not the Conv
    after it."""
    onnx.save(_conv_clip_conv(), str(tmp_path / "ref.onnx"))
    onnx.save(_conv_clip_conv(clip="Identity"), str(tmp_path / "cand.onnx"))
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32) * 4
    found = localize(tmp_path / "ref.onnx", tmp_path / "cand.onnx", x, tolerance=1e-4)
    assert found.first is not None and (found.first.node, found.first.op_type) == ("act", "Clip")
    assert found.first.input_error == 0.0 and found.unmatched == 0


def test_an_input_without_counterpart_is_not_read_as_exact(tmp_path: Path) -> None:
    """c1 is corrupted and the candidate has no tensor for the activation after it: c2's input error is c1's
    (what enters through the missing node), so c2 does not outrank c1 by growth."""
    onnx.save(_conv_clip_conv(), str(tmp_path / "ref.onnx"))
    onnx.save(_conv_clip_conv(first_weight_scale=1.5, clip="drop"), str(tmp_path / "cand.onnx"))
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    found = localize(tmp_path / "ref.onnx", tmp_path / "cand.onnx", x, tolerance=1e-4)
    assert found.first is not None and found.first.node == "c1"
    c2 = next(row for row in found.top if row.node == "c2")
    assert c2.input_error == pytest.approx(found.first.error)
    assert c2.through == ("act",)  # named: the candidate computes it inside c2
    assert found.top[0].node == "c1" and found.unmatched == 1
    assert Localization.from_dict(found.to_dict()) == found


def test_a_fused_node_is_named_with_the_one_reported(tmp_path: Path) -> None:
    """The candidate fuses the activation into c1 (a Conv of that name writing the activation's tensor, as
    ONNX Runtime's FusedConv or a folded BatchNorm does): c1 is not paired with it (its output would be compared
    with the fused result), the activation is first, and c1, with no tensor of its own there, is named with it."""
    onnx.save(_conv_clip_conv(), str(tmp_path / "ref.onnx"))
    fused = _conv_clip_conv(first_weight_scale=1.5, clip="drop")
    fused.graph.node[0].output[0] = "act_out"  # c1 writes the activation's tensor: a Conv standing in for
    fused.graph.node[1].input[0] = "act_out"  # a fused Conv + activation that keeps the Conv's name and op
    onnx.save(fused, str(tmp_path / "cand.onnx"))
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    found = localize(tmp_path / "ref.onnx", tmp_path / "cand.onnx", x, tolerance=1e-4)
    assert found.first is not None and found.first.node == "act" and found.first.through == ("c1",)


def test_a_float16_input_is_compared_as_fed(tmp_path: Path) -> None:
    """A --fp16-io candidate is fed the input in float16: that rounding is the first Conv's input error, not
    growth of its own (the input was compared as the float32 array on both sides)."""
    weight = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    for kind, path in ((TensorProto.FLOAT, tmp_path / "ref.onnx"), (TensorProto.FLOAT16, tmp_path / "cand.onnx")):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(kind)
        nodes = [helper.make_node("Conv", ["input", "w"], ["c1_out"], name="c1", pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c1_out"], ["r_out"], name="r"),
                 helper.make_node("Cast", ["r_out"], ["output"], name="out", to=TensorProto.FLOAT)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", kind, [1, 3, 16, 16])],
                                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 16, 16])],
                                  [onnx.numpy_helper.from_array(weight.astype(dtype), "w")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    found = localize(tmp_path / "ref.onnx", tmp_path / "cand.onnx", x, tolerance=1e-2)
    conv = next(row for row in found.top if row.node == "c1")
    assert 1e-5 < conv.input_error < 1e-3 and conv.growth < 10
