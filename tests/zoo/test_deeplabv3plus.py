"""DeepLabv3+: registry specs, options, architecture details, and export to ONNX Runtime on two shapes.

The per-variant tests are generated from the registry, so a new DeepLab variant is tested once registered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from deploykit.errors import ConfigConflict
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.types import IMAGENET
from deploykit.zoo import get_model_spec, list_models
from deploykit.zoo.backbones.mobilenetv2 import MobileNetV2, block_plan
from deploykit.zoo.backbones.resnet import stage_plan
from deploykit.zoo.backbones.xception import Xception65, XceptionModule
from deploykit.zoo.checkpoints import _FORMATS
from deploykit.zoo.deeplabv3plus import DeepLabV3Plus
from deploykit.zoo.layers import SeparableConv2d
from deploykit.zoo.sources import load_model
from tests.fixtures.tiny import TINY

VARIANTS = [name for name in list_models() if name.startswith("deeplabv3plus_")]
WIDTH = {"width_multiplier": 0.125}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Two shared cores: torch's thread pool fights other test processes and runs 10-100x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def photographs(height: int, width: int) -> torch.Tensor:
    """Two real photographs (astronaut, coffee), resized, ImageNet-normalised: a (2, 3, H, W) batch."""
    skdata = pytest.importorskip("skimage.data")
    images = [torch.from_numpy(np.ascontiguousarray(f())).permute(2, 0, 1).float() / 255
              for f in (skdata.astronaut, skdata.coffee)]
    batch = torch.stack([nn.functional.interpolate(im[None], size=(height, width), mode="bilinear",
                                                   align_corners=False)[0] for im in images])
    mean, std = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1), torch.tensor(IMAGENET.std).view(1, 3, 1, 1)
    return (batch - mean) / std


def build(name: str, **options: object) -> DeepLabV3Plus:
    model = get_model_spec(name).build(**{**WIDTH, **options})
    assert isinstance(model, DeepLabV3Plus)
    return model.eval()


def test_every_backbone_is_registered_with_the_alias() -> None:
    assert set(VARIANTS) == {f"deeplabv3plus_{b}" for b in ("resnet50", "resnet101", "xception65", "mobilenetv2")}
    assert get_model_spec("deeplabv3plus").name == "deeplabv3plus_resnet50"


@pytest.mark.parametrize("name", VARIANTS)
def test_spec(name: str) -> None:
    spec = get_model_spec(name)
    assert (spec.task, spec.input_size, spec.num_classes, spec.output_names) == (
        "segmentation", (513, 513), 21, ("output",))
    assert spec.preprocessing == IMAGENET and spec.preprocessing.input_range == (0.0, 1.0)
    assert spec.checkpoint_formats and all(f in _FORMATS for f in spec.checkpoint_formats)
    options = spec.options()
    for option in ("output_stride", "decoder", "separable", "decoder_convs", "align_corners", "num_classes",
                   "width_multiplier", "compat"):
        assert options[option].kind is options[option].KEYWORD_ONLY
    assert "pretrained_backbone" not in options
    assert options["output_stride"].default == 16 and options["decoder_convs"].default == 2
    assert options["align_corners"].default is True and options["num_classes"].default == 21
    assert options["separable"].default is (name == "deeplabv3plus_xception65")


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_logits_at_input_resolution(name: str) -> None:
    spec = get_model_spec(name)
    model = build(name)
    height, width = TINY[spec.name].input_size
    with torch.inference_mode():
        out = model(photographs(height, width))
        odd = model(torch.randn(1, 3, 50, 71))
    assert out.shape == (2, 21, height, width) and odd.shape == (1, 21, 50, 71)
    assert torch.isfinite(out).all() and out.std() > 1e-3
    # BN in eval mode: each image's logits do not depend on its batch neighbour.
    with torch.inference_mode():
        single = model(photographs(height, width)[:1])
    torch.testing.assert_close(out[:1], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_export_runs_in_onnx_runtime_on_a_second_shape(name: str, tmp_path: Path) -> None:
    loaded = load_model(name, options=dict(TINY[get_model_spec(name).name].options))
    path = tmp_path / "model.onnx"
    result = onnx_from_torch(loaded, path, input_shape=(1, 3, *TINY[get_model_spec(name).name].input_size),
                             simplify=False)
    assert result.passed and result.exporter == "torchscript"
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert "GlobalAveragePool" in ops and "Resize" in ops
    assert not ops & {"AveragePool", "ReduceMean"}  # image pooling must not bake in the export size
    x = photographs(97, 129)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        expected = loaded.module(x).numpy()
    assert got.shape == (2, 21, 97, 129)
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36))])
@pytest.mark.parametrize("name", VARIANTS)
def test_output_stride_sets_aspp_rates_and_feature_strides(name: str, output_stride: int,
                                                           rates: tuple[int, ...]) -> None:
    model = build(name, output_stride=output_stride)
    assert tuple(_atrous_rate(model.aspp.convs[i]) for i in (1, 2, 3)) == rates
    with torch.inference_mode():
        high, low = model.backbone(torch.randn(1, 3, 65, 65))
    # 65 px: stride 4 -> 17, 8 -> 9, 16 -> 5 (every stride-2 layer maps n to (n + 1) // 2)
    assert high.shape[-1] == {16: 5, 8: 9}[output_stride] and low.shape[-1] == 17
    assert high.shape[1] == model.backbone.out_channels and low.shape[1] == model.backbone.low_level_channels


def _atrous_rate(branch: nn.Module) -> int:
    conv = branch.depthwise if isinstance(branch, SeparableConv2d) else branch[0]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.padding == conv.dilation
    return int(conv.dilation[0])


def test_resnet_dilation_replaces_strides_as_torchvision_or_jfzhang95() -> None:
    blocks = (3, 4, 23, 3)
    assert stage_plan(blocks, 16, "paper")[2:] == [(2, [1] * 23), (1, [1, 2, 2])]
    assert stage_plan(blocks, 8, "paper")[2:] == [(1, [1] + [2] * 22), (1, [2, 4, 4])]
    assert stage_plan(blocks, 16, "jfzhang95")[2:] == [(2, [1] * 23), (1, [2, 4, 8])]  # multi-grid (1, 2, 4)
    assert stage_plan(blocks, 8, "jfzhang95")[2:] == [(1, [2] * 23), (1, [4, 8, 16])]
    model = build("deeplabv3plus_resnet101", output_stride=8)
    layer4 = model.backbone.layer4
    assert layer4[0].conv2.stride == (1, 1) and layer4[1].conv2.dilation == (4, 4)


def test_mobilenet_dilates_the_last_stages() -> None:
    plan16 = {(t, c, s, d) for t, c, s, d, _ in block_plan(16, "paper")}
    assert (6, 160, 1, 1) in plan16 and (6, 160, 1, 2) in plan16 and (6, 320, 1, 2) in plan16
    assert [b[3] for b in block_plan(16, "jfzhang95") if b[1] == 160] == [1, 1, 1]  # stage keeps old rate
    plan8 = block_plan(8, "paper")
    assert [b[2] for b in plan8 if b[1] == 64] == [1, 1, 1, 1] and {b[3] for b in plan8 if b[1] == 320} == {4}
    assert len(plan8) == 17


def test_xception65_layout_and_rates() -> None:
    net = Xception65(output_stride=16, width_multiplier=0.125)
    with torch.device("meta"):
        jf_full = Xception65(compat="jfzhang95")
    blocks = net.blocks()
    assert len(blocks) == 21 and [b.skip_type for b in blocks].count("sum") == 16  # 16 middle-flow modules
    separable = [m for m in net.modules() if isinstance(m, SeparableConv2d)]
    assert len(separable) == 21 * 3
    assert all(m.depthwise.stride == (2, 2) for m in (b.convs[2] for b in blocks[:3]))  # no max pooling
    assert [c.depthwise.dilation[0] for c in blocks[19].convs] == [1, 1, 1]
    assert [c.depthwise.dilation[0] for c in blocks[20].convs] == [2, 2, 2]
    assert isinstance(blocks[20].convs[0].depthwise_act, nn.ReLU) and not blocks[20].pre_relu
    assert isinstance(blocks[3].convs[0].depthwise_act, nn.Identity) and blocks[3].pre_relu
    os8 = Xception65(output_stride=8, width_multiplier=0.125).blocks()
    assert os8[2].convs[2].depthwise.stride == (1, 1) and os8[10].convs[0].depthwise.dilation == (2, 2)
    assert [c.depthwise.dilation[0] for c in os8[20].convs] == [4, 4, 4]
    jf = Xception65(output_stride=8, width_multiplier=0.125, compat="jfzhang95").blocks()
    assert [c.depthwise.dilation[0] for c in jf[19].convs] == [2, 2, 1]
    assert net.low_level_channels == 32 and jf_full.low_level_channels == 128


def test_decoder_options() -> None:
    v3 = build("deeplabv3plus_resnet50", decoder=False)
    assert v3.decoder is None and v3.classifier.in_channels == 32  # DeepLabv3: ASPP -> logits
    three = build("deeplabv3plus_resnet50", decoder_convs=3)
    assert three.decoder is not None and len(three.decoder.convs) == 3
    sc = build("deeplabv3plus_resnet50", separable=True)
    assert sc.decoder is not None and all(isinstance(c, SeparableConv2d) for c in sc.decoder.convs)
    assert all(isinstance(sc.aspp.convs[i], SeparableConv2d) for i in (1, 2, 3))
    assert not any(isinstance(m, SeparableConv2d) for m in build("deeplabv3plus_resnet50").modules())
    with torch.inference_mode():
        assert v3(torch.randn(1, 3, 65, 65)).shape == (1, 21, 65, 65)


def test_align_corners_and_num_classes_reach_the_graph() -> None:
    corners = build("deeplabv3plus_mobilenetv2", num_classes=5)
    half_pixel = build("deeplabv3plus_mobilenetv2", num_classes=5, align_corners=False)
    half_pixel.load_state_dict(corners.state_dict())
    x = photographs(65, 65)
    with torch.inference_mode():
        a, b = corners(x), half_pixel(x)
    assert a.shape == (2, 5, 65, 65) and (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("options", [
    {"output_stride": 32}, {"output_stride": 4}, {"decoder_convs": 0}, {"num_classes": 0},
    {"compat": "mmseg"}, {"width_multiplier": 0}, {"pretrained_backbone": True},
])
def test_bad_options_are_config_conflicts(options: dict[str, object]) -> None:
    with pytest.raises(ConfigConflict):
        get_model_spec("deeplabv3plus_resnet50").build(**options)


def test_xception_has_no_vainf_layout() -> None:
    with pytest.raises(ConfigConflict, match="VainF"):
        get_model_spec("deeplabv3plus_xception65").build(compat="vainf")


def test_vainf_mobilenet_padding_quirks() -> None:
    """VainF: unpadded stem; blocks pad their input before the 1x1 expansion (border != 0 after BN)."""
    paper, vainf = MobileNetV2(width_multiplier=0.25), MobileNetV2(width_multiplier=0.25, compat="vainf")
    vainf.load_state_dict(paper.state_dict())
    with torch.no_grad():
        for m in paper.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.uniform_(0.5, 1.0)  # a BN shift makes padding-before-expansion visible
    vainf.load_state_dict(paper.state_dict())
    paper.eval()
    vainf.eval()
    x = torch.randn(1, 3, 65, 65)
    with torch.inference_mode():
        assert paper.features[0](x).shape[-1] == 33 and vainf.features[0](x).shape[-1] == 32
        h = paper.features[0](x)
        a, b = paper.features[2](paper.features[1](h)), vainf.features[2](vainf.features[1](h))
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    torch.testing.assert_close(a[interior], b[interior])
    assert (a - b).abs().max() > 1e-2


def test_jfzhang95_xception_takes_the_shortcut_after_the_relu() -> None:
    """TF adds the module's raw input; jfzhang95's in-place ReLU makes it add ReLU(input)."""
    paper = XceptionModule(8, (8, 8, 8), skip="sum").eval()
    jf = XceptionModule(8, (8, 8, 8), skip="sum", jfzhang95=True).eval()
    jf.load_state_dict(paper.state_dict())
    x = torch.randn(1, 8, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(paper(x) - jf(x), x - x.relu())


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_full_size_export_at_the_default_input(name: str, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    loaded = load_model(name)
    result = onnx_from_torch(loaded, tmp_path / "model.onnx", input_shape=(1, 3, *spec.input_size), simplify=False)
    assert result.passed, result.checks
