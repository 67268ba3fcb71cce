"""The ResNet DeepLab backbone's resnet_layout="tf_beta" (TF-slim resnet_v1_beta, the paper's ResNet-101):
unit strides and rates under TF's stack_blocks_dense rule, the deep stem, subsampling shortcuts, TF DeepLab's
low-level end point, options, and export to ONNX Runtime on a second shape. The full-size multiply-adds against the
paper are in test_flops.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from deploykit.errors import ConfigConflict
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.types import IMAGENET
from deploykit.zoo import get_model_spec
from deploykit.zoo.backbones.resnet import Bottleneck, ResNet, stack_blocks_dense, stage_plan, unit_plan
from deploykit.zoo.deeplabv3plus import DeepLabV3Plus
from deploykit.zoo.sources import load_model

R101 = (3, 4, 23, 3)
TINY = {"width_multiplier": 0.125, "resnet_layout": "tf_beta"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores
    yield
    torch.set_num_threads(before)


def photographs(height: int, width: int) -> torch.Tensor:
    """Two real photographs (astronaut, rocket), resized, ImageNet-normalised: a (2, 3, H, W) batch."""
    skdata = pytest.importorskip("skimage.data")
    images = [torch.from_numpy(np.ascontiguousarray(f())).permute(2, 0, 1).float()[None] / 255
              for f in (skdata.astronaut, skdata.rocket)]
    batch = torch.cat([nn.functional.interpolate(im, size=(height, width), mode="bilinear", align_corners=False)
                       for im in images])
    return (batch - torch.tensor(IMAGENET.mean).view(1, 3, 1, 1)) / torch.tensor(IMAGENET.std).view(1, 3, 1, 1)


def tiny(name: str = "deeplabv3plus_resnet101", **options: object) -> DeepLabV3Plus:
    model = get_model_spec(name).build(**{**TINY, **options})
    assert isinstance(model, DeepLabV3Plus)
    return model.eval()


def unit(layer: nn.Module, index: int) -> Bottleneck:
    assert isinstance(layer, nn.Sequential)
    found = layer[index]
    assert isinstance(found, Bottleneck)
    return found


def conv(module: nn.Module, index: int = 0) -> nn.Conv2d:
    assert isinstance(module, nn.Sequential)
    found = module[index]
    assert isinstance(found, nn.Conv2d)
    return found


def test_tf_beta_strides_in_the_last_unit_and_dilates_after_the_output_stride() -> None:
    plan16 = unit_plan(R101, 16, "paper", "tf_beta")
    assert plan16[0] == [(1, 1), (1, 1), (2, 1)] and plan16[1] == [(1, 1)] * 3 + [(2, 1)]
    assert plan16[2] == [(1, 1)] * 23 and plan16[3] == [(1, 2)] * 3  # block3's stride becomes rate 2 after it
    plan8 = unit_plan(R101, 8, "paper", "tf_beta")
    assert plan8[:2] == [plan16[0], [(1, 1)] * 4] and plan8[2] == [(1, 2)] * 23 and plan8[3] == [(1, 4)] * 3


def test_tf_rule_gives_torchvisions_replace_stride_with_dilation() -> None:
    """The same TF rule on torchvision's strides (first unit) is torchvision's layout, as before tf_beta."""
    assert stage_plan(R101, 16, "paper") == [(1, [1] * 3), (2, [1] * 4), (2, [1] * 23), (1, [1, 2, 2])]
    assert stage_plan(R101, 8, "paper")[2:] == [(1, [1] + [2] * 22), (1, [2, 4, 4])]
    assert stack_blocks_dense([[2, 2], [2]], 8) == [[(2, 1), (1, 1)], [(1, 2)]]


def test_deep_stem_and_subsampling_shortcuts() -> None:
    backbone = ResNet(R101, width_multiplier=0.125, layout="tf_beta")
    stem = [conv(backbone.stem.get_submodule(name)) for name in ("conv1_1", "conv1_2", "conv1_3")]
    assert [(c.kernel_size, c.stride, c.out_channels) for c in stem] == [
        ((3, 3), (2, 2), 8), ((3, 3), (1, 1), 8), ((3, 3), (1, 1), 16)]
    assert not hasattr(backbone, "conv1")
    first, strided = unit(backbone.layer1, 0), unit(backbone.layer1, 2)
    assert first.downsample is not None and conv(first.downsample).stride == (1, 1)
    assert first.conv1.in_channels == 16  # the stem's 128 (scaled)
    assert strided.conv2.stride == (2, 2) and isinstance(strided.downsample, nn.MaxPool2d)
    assert strided.downsample.stride == 2 and strided.downsample.kernel_size == 1
    assert unit(backbone.layer2, 0).conv2.stride == (1, 1) and unit(backbone.layer2, 3).conv2.stride == (2, 2)
    assert {unit(backbone.layer4, i).conv2.dilation for i in range(3)} == {(2, 2)}
    keys = set(backbone.state_dict())
    assert "stem.conv1_3.1.running_var" in keys and "conv1.weight" not in keys


def test_low_level_feature_is_the_second_units_residual_branch() -> None:
    """TF DeepLab's decoder end point block1/unit_2/bottleneck_v1/conv3: after the BN, before the sum and ReLU."""
    model = tiny()
    assert isinstance(model.backbone, ResNet)
    captured: dict[str, torch.Tensor] = {}
    unit2, unit3 = unit(model.backbone.layer1, 1), unit(model.backbone.layer1, 2)
    unit2.bn3.register_forward_hook(lambda _m, _i, out: captured.update(bn3=out.clone()))
    unit2.conv1.register_forward_pre_hook(lambda _m, args: captured.update(unit2_in=args[0].clone()))
    unit3.conv1.register_forward_pre_hook(lambda _m, args: captured.update(unit3_in=args[0].clone()))
    with torch.inference_mode():
        high, low = model.backbone(photographs(65, 65))
    assert low.shape == (2, model.backbone.low_level_channels, 17, 17) and high.shape[-1] == 5
    torch.testing.assert_close(low, captured["bn3"])
    # unit 2's output (unit 3's input) is still ReLU(residual + shortcut); the decoder gets the residual
    torch.testing.assert_close(captured["unit3_in"], torch.relu(low + captured["unit2_in"]))
    assert (low < 0).any() and not torch.allclose(low, captured["unit3_in"])


def test_tf_beta_runs_exports_and_matches_onnx_runtime_on_a_second_shape(tmp_path: Path) -> None:
    options = {**TINY, "output_stride": 8}
    loaded = load_model("deeplabv3plus_resnet101", options=options)
    path = tmp_path / "model.onnx"
    result = onnx_from_torch(loaded, path, input_shape=(1, 3, 65, 65), simplify=False)
    assert result.passed and result.exporter == "torchscript"  # torch.onnx.export(dynamo=False)
    x = photographs(97, 129)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.inference_mode():
        expected = loaded.module(x).numpy()
    assert got.shape == (2, 21, 97, 129) and np.isfinite(expected).all() and expected.std() > 1e-3
    assert np.abs(got - expected).max() < 1e-4


def test_layouts_differ_and_resnet50_builds() -> None:
    x = photographs(65, 65)
    with torch.inference_mode():
        out = tiny("deeplabv3plus_resnet50", decoder=False)(x)
    assert out.shape == (2, 21, 65, 65) and torch.isfinite(out).all()
    torchvision_keys = set(tiny(resnet_layout="torchvision").state_dict())
    assert torchvision_keys != set(tiny().state_dict())


@pytest.mark.parametrize("name", ["deeplabv3plus_resnet50", "deeplabv3plus_resnet101"])
def test_torchvision_stays_the_default_layout(name: str) -> None:
    option = get_model_spec(name).options()["resnet_layout"]
    assert option.kind is option.KEYWORD_ONLY and option.default == "torchvision"


@pytest.mark.parametrize(("name", "options", "match"), [
    ("deeplabv3plus_resnet101", {"resnet_layout": "caffe"}, "resnet_layout"),
    ("deeplabv3plus_resnet101", {"resnet_layout": "tf_beta", "compat": "vainf"}, "torchvision"),
    ("deeplabv3plus_resnet50", {"resnet_layout": "tf_beta", "compat": "jfzhang95"}, "torchvision"),
    ("deeplabv3plus_resnet50", {"resnet_layout": "tf_beta", "width_multiplier": 0}, "width_multiplier"),
    ("deeplabv3plus_xception65", {"resnet_layout": "tf_beta"}, "no option"),
])
def test_bad_layout_options_are_config_conflicts(name: str, options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigConflict, match=match):
        get_model_spec(name).build(**options)
