"""Checkpoints saved by other repositories' own module structures (tests/zoo/foreign.py) load into deploykit and
reproduce those structures' outputs.

The registry test walks every registered checkpoint format: each needs a foreign structure here, and a
state_dict made from it must convert with no missing or unexpected keys (meta tensors: full-size models, no
memory). The output tests run the foreign model and deploykit's on the same input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import deploykit.zoo.models  # noqa: F401  (registers every model and checkpoint format)
from deploykit.zoo import get_model_spec
from deploykit.zoo.backbones.vgg import scaled
from deploykit.zoo.checkpoints import convert_checkpoint, load_state_dict_strict, registered_formats
from deploykit.zoo.sources import load_model
from tests.zoo import foreign, foreign_vgg

# Loading into a meta-device model copies nothing (the key test needs only names and shapes).
pytestmark = [pytest.mark.filterwarnings("ignore:.*meta parameter:UserWarning"),
              pytest.mark.usefixtures("two_threads")]


@dataclass(frozen=True)
class Foreign:
    model: str  # the deploykit model the checkpoint is for
    make: Callable[[], nn.Module]
    wrap: Callable[[dict[str, torch.Tensor]], Any]  # how the repository saves it
    partial: bool = False  # backbone-only weights: the head stays random


FOREIGN: dict[str, Foreign] = {
    "vainf_deeplabv3plus": Foreign("deeplabv3plus_mobilenetv2", lambda: foreign.VainfDeepLab("mobilenet"),
                                   lambda s: {"model_state": s, "cur_itrs": 30000, "best_score": 0.7}),
    "jfzhang95_deeplab": Foreign("deeplabv3plus_resnet101", foreign.JfDeepLab,
                                 lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 50}),
    "torchvision_resnet": Foreign("deeplabv3plus_resnet50", lambda: foreign.TvResNet((3, 4, 6, 3)), dict,
                                  partial=True),
    "torchvision_mobilenet_v2": Foreign("deeplabv3plus_mobilenetv2", foreign.TvMobileNetV2, dict, partial=True),
    "torchvision_vgg16": Foreign("fcn8s", foreign_vgg.TvVGG16, dict, partial=True),
    "torchvision_vgg16_features": Foreign("msinet", foreign_vgg.TvVGG16, dict, partial=True),
    "deconvnet_torchvision_vgg16_bn": Foreign("deconvnet", lambda: foreign_vgg.TvVGG16(batch_norm=True), dict,
                                              partial=True),
    "wkentaro_fcn": Foreign("fcn8s", foreign_vgg.WkentaroFCN8s, dict),
    "msinet_foveacast": Foreign("msinet", foreign_vgg.FoveacastMSINet, dict),
}


def test_every_registered_format_has_a_foreign_structure() -> None:
    assert set(FOREIGN) == set(registered_formats()), "write the repository's structure in tests/zoo/foreign.py"


@pytest.mark.parametrize("name", registered_formats())
def test_a_foreign_state_dict_loads_without_missing_or_unexpected_keys(name: str) -> None:
    case = FOREIGN[name]
    with torch.device("meta"):
        state = case.make().state_dict()
    spec = get_model_spec(case.model)
    assert name in spec.checkpoint_formats
    converted = convert_checkpoint(case.wrap(state), (name,))
    assert converted.source != "state_dict", f"{name} did not recognise its own repository's checkpoint"
    with torch.device("meta"):
        model = spec.build(**converted.options)
    report = load_state_dict_strict(model, converted.state_dict, allow_partial=case.partial,
                                    source=converted.source)
    assert report.loaded == len(converted.state_dict)
    if not case.partial:
        assert report.left_random == ()


def _loaded(tmp_path: Path, model: str, ckpt: Any, **options: Any) -> nn.Module:
    path = tmp_path / "checkpoint.pth"
    torch.save(ckpt, path)
    loaded = load_model(model, options=options, weights=path)
    assert loaded.load_report is not None and loaded.load_report.left_random == ()
    return loaded.module


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


@pytest.mark.parametrize(("backbone", "plus", "separable", "output_stride"), [
    ("mobilenet", True, False, 16), ("resnet101", True, False, 16),  # deeplabv3plus_*
    ("mobilenet", False, False, 16), ("resnet50", False, False, 8),  # deeplabv3_* (DeepLabHead, no decoder)
    ("mobilenet", True, True, 8), ("resnet50", True, True, 16),  # deeplabv3plus_* --separable_conv
])
def test_vainf_checkpoints_reproduce_the_vainf_model(backbone: str, plus: bool, separable: bool, output_stride: int,
                                                     tmp_path: Path) -> None:
    theirs = foreign.randomize(foreign.VainfDeepLab(backbone, num_classes=21, output_stride=output_stride,
                                                    plus=plus, separable=separable))
    keys = theirs.state_dict()
    if backbone == "mobilenet":  # the layout: slices keep their indices
        assert "backbone.high_level_features.4.conv.0.0.weight" in keys
        assert "backbone.low_level_features.3.conv.2.weight" in keys
    assert any(".body." in k for k in keys) == separable
    model = "deeplabv3plus_mobilenetv2" if backbone == "mobilenet" else f"deeplabv3plus_{backbone}"
    ours = _loaded(tmp_path, model, {"model_state": keys, "cur_itrs": 1}, output_stride=output_stride)
    x = torch.randn(1, 3, 65, 65)
    with torch.inference_mode():
        error = _max_error(ours(x), theirs(x))
    print(f"vainf {backbone} plus={plus} separable={separable} os{output_stride}: max abs error {error:.3g}")
    assert error <= 1e-4


@pytest.mark.parametrize(("backbone", "model"), [("resnet", "deeplabv3plus_resnet101"),
                                               ("mobilenet", "deeplabv3plus_mobilenetv2")])
def test_jfzhang95_checkpoints_reproduce_the_jfzhang95_model(backbone: str, model: str, tmp_path: Path) -> None:
    theirs = foreign.randomize(foreign.JfDeepLab(num_classes=21, backbone=backbone))
    ours = _loaded(tmp_path, model, {"state_dict": theirs.state_dict(), "epoch": 1})
    x = torch.randn(1, 3, 65, 65)
    with torch.inference_mode():
        error = _max_error(ours(x), theirs(x))
    print(f"jfzhang95 {backbone}: max abs error {error:.3g}")
    assert error <= 1e-4


def test_torchvision_backbones_reproduce_torchvision_features(tmp_path: Path) -> None:
    resnet = foreign.randomize(foreign.TvResNet((3, 4, 6, 3), dilate=(False, False, True)))
    path = tmp_path / "resnet50.pth"
    torch.save(resnet.state_dict(), path)
    ours = load_model("deeplabv3plus_resnet50", weights=path, allow_partial=True).module
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        features, low = ours.backbone(x)  # type: ignore[operator]
        layers = foreign.IntermediateLayers(resnet, {"layer1": "low", "layer4": "out"})(x)
        resnet_error = max(_max_error(features, layers["out"]), _max_error(low, layers["low"]))
    mobilenet = foreign.randomize(foreign.TvMobileNetV2())
    torch.save(mobilenet.state_dict(), path)
    ours = load_model("deeplabv3plus_mobilenetv2", weights=path, allow_partial=True).module
    with torch.inference_mode():
        _, low = ours.backbone(x)  # type: ignore[operator]
        # torchvision's MobileNetV2 has no dilation: compare the low-level (stride 4) features it shares.
        mobilenet_error = _max_error(low, mobilenet.features[:4](x))
    print(f"torchvision resnet50 OS16 backbone {resnet_error:.3g}, mobilenet_v2 low-level {mobilenet_error:.3g}")
    assert resnet_error <= 1e-4 and mobilenet_error <= 1e-5


def test_wkentaro_fcn8s_checkpoint_reproduces_the_wkentaro_model(tmp_path: Path) -> None:
    width = 0.0625
    theirs = foreign.randomize(foreign_vgg.WkentaroFCN8s(21, ch=lambda c: scaled(c, width)))
    # Random transposed-conv weights too (its files hold bilinear ones): they must load, not be re-initialised.
    ours = _loaded(tmp_path, "fcn8s", {"model_state_dict": theirs.state_dict(), "arch": "FCN8s"}, width=width)
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        error = _max_error(ours(x), theirs(x))
    print(f"wkentaro fcn8s: max abs error {error:.3g}")
    assert error <= 1e-4


def test_foveacast_msinet_checkpoint_reproduces_the_port(tmp_path: Path) -> None:
    width = 0.0625
    theirs = foreign.randomize(foreign_vgg.FoveacastMSINet(ch=lambda c: scaled(c, width)))
    ours = _loaded(tmp_path, "msinet", theirs.state_dict(), width=width)
    x = torch.rand(1, 3, 48, 64) * 255
    mean = torch.tensor(foreign_vgg.FOVEACAST_MEAN).view(1, 3, 1, 1)  # deploykit subtracts it in preprocessing
    with torch.inference_mode():
        error = _max_error(ours(x - mean), theirs(x))
    print(f"foveacast msinet: max abs error {error:.3g}")
    assert error <= 1e-5
