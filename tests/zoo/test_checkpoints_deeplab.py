"""DeepLabv3+ checkpoint formats: VainF, jfzhang95, torchvision ImageNet backbones.

Fake checkpoints are made from our own tiny models with the repositories' key layouts, written here
independently of the converters (our key -> their key), and must load back exactly. Lists of real key names
and shapes, copied by hand from the repositories' module definitions, catch a mapping both sides got wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from deploykit.errors import CheckpointError
from deploykit.zoo import get_model_spec
from deploykit.zoo.checkpoints import StateDict, convert_checkpoint, load_state_dict_strict
from deploykit.zoo.sources import load_model

TINY = {"width_multiplier": 0.125, "num_classes": 5}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_state(name: str, **options: object) -> StateDict:
    torch.manual_seed(0)
    return get_model_spec(name).build(**{**TINY, **options}).state_dict()


def rename(state: StateDict, fn: Callable[[str], str | None]) -> StateDict:
    out = {}
    for key, value in state.items():
        new = fn(key)
        if new is not None:
            out[new] = value
    return out


# --- our key -> the repository's key ---------------------------------------------------------------------------

def to_vainf(key: str) -> str:
    if m := re.match(r"backbone\.features\.(\d+)\.(.*)", key):
        index = int(m[1])
        part = "low_level_features" if index < 4 else "high_level_features"
        return f"backbone.{part}.{index}.{m[2]}"
    for ours, theirs in (("aspp.", "classifier.aspp."), ("decoder.project.", "classifier.project."),
                         ("decoder.convs.0.", "classifier.classifier."), ("classifier.", "classifier.classifier.3.")):
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def to_jfzhang95(key: str, *, dropout: bool = True, block2_offset: int = 0) -> str:
    """jfzhang95 names; `dropout`: decoder.last_conv with Dropout layers (later versions); `block2_offset`: 1 for
    versions whose block2 starts with a ReLU (rep.0 is a ReLU)."""
    if m := re.match(r"backbone\.features\.(\d+)\.conv\.(\d(?:\.\d)?)\.(.*)", key):
        expanded = {"0.0": 0, "0.1": 1, "1.0": 3, "1.1": 4, "2": 6, "3": 7}
        plain = {"0.0": 0, "0.1": 1, "1": 3, "2": 4}
        layout = plain if m[1] == "1" else expanded
        return f"backbone.features.{m[1]}.conv.{layout[m[2]]}.{m[3]}"
    if m := re.match(r"backbone\.block21\.convs\.(\d)\.(\w+)\.(.*)", key):
        k = int(m[1]) + 3
        part = {"depthwise": f"conv{k}.conv1", "depthwise_bn": f"conv{k}.bn", "pointwise": f"conv{k}.pointwise",
                "pointwise_bn": f"bn{k}"}[m[2]]
        return f"backbone.{part}.{m[3]}"
    if m := re.match(r"backbone\.block(\d+)\.convs\.(\d)\.(\w+)\.(.*)", key):
        block = int(m[1])
        index = 3 * int(m[2]) + {1: 0, 2: block2_offset}.get(block, 1)
        part = {"depthwise": f"{index}.conv1", "depthwise_bn": f"{index}.bn", "pointwise": f"{index}.pointwise",
                "pointwise_bn": f"{index + 1}"}[m[3]]
        return f"backbone.block{block}.rep.{part}.{m[4]}"
    if m := re.match(r"backbone\.block(\d+)\.skip_bn\.(.*)", key):
        return f"backbone.block{m[1]}.skipbn.{m[2]}"
    if m := re.match(r"aspp\.convs\.([0-3])\.([01])\.(.*)", key):
        return f"aspp.aspp{int(m[1]) + 1}.{'atrous_conv' if m[2] == '0' else 'bn'}.{m[3]}"
    last = (0, 1, 4, 5, 8) if dropout else (0, 1, 3, 4, 6)
    table = {"aspp.convs.4.": "aspp.global_avg_pool.", "aspp.project.0.": "aspp.conv1.",
             "aspp.project.1.": "aspp.bn1.", "decoder.project.0.": "decoder.conv1.",
             "decoder.project.1.": "decoder.bn1.", "decoder.convs.0.0.": f"decoder.last_conv.{last[0]}.",
             "decoder.convs.0.1.": f"decoder.last_conv.{last[1]}.",
             "decoder.convs.1.0.": f"decoder.last_conv.{last[2]}.",
             "decoder.convs.1.1.": f"decoder.last_conv.{last[3]}.", "classifier.": f"decoder.last_conv.{last[4]}."}
    for ours, theirs in table.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def with_jfzhang95_mobilenet_aliases(state: StateDict) -> StateDict:
    """jfzhang95's MobileNetV2 also registers features[:4] and features[4:] as low/high_level_features."""
    out = dict(state)
    for key, value in state.items():
        if m := re.match(r"backbone\.features\.(\d+)\.(.*)", key):
            index = int(m[1])
            alias = "low_level_features" if index < 4 else "high_level_features"  # slices keep names
            out[f"backbone.{alias}.{index}.{m[2]}"] = value
    return out


def assert_same(a: StateDict, b: StateDict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- round trips -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["deeplabv3plus_resnet50", "deeplabv3plus_mobilenetv2"])
def test_vainf_round_trip(name: str) -> None:
    ours = tiny_state(name, compat="vainf", decoder_convs=1, align_corners=False)
    ckpt = {"model_state": rename(ours, to_vainf), "cur_itrs": 30000, "best_score": 0.77}
    assert any(k.startswith("classifier.classifier.3.") for k in ckpt["model_state"])  # type: ignore[union-attr]
    converted = convert_checkpoint(ckpt, get_model_spec(name).checkpoint_formats)
    assert_same(converted.state_dict, ours)
    assert converted.options == {"decoder": True, "decoder_convs": 1, "separable": False, "align_corners": False,
                                 "compat": "vainf", "num_classes": 5}
    assert "VainF" in converted.source


@pytest.mark.parametrize(("name", "dropout", "block2_offset"), [
    ("deeplabv3plus_resnet101", True, 0), ("deeplabv3plus_resnet50", False, 0),
    ("deeplabv3plus_xception65", True, 0), ("deeplabv3plus_xception65", False, 1),
    ("deeplabv3plus_mobilenetv2", True, 0),
])
def test_jfzhang95_round_trip(name: str, dropout: bool, block2_offset: int) -> None:
    ours = tiny_state(name, compat="jfzhang95", separable=False)
    theirs = rename(ours, lambda k: to_jfzhang95(k, dropout=dropout, block2_offset=block2_offset))
    if "mobilenet" in name:
        theirs = with_jfzhang95_mobilenet_aliases(theirs)
    theirs = {f"module.{k}": v for k, v in theirs.items()}  # saved from DataParallel
    converted = convert_checkpoint({"state_dict": theirs, "epoch": 50, "best_pred": 0.79},
                                   get_model_spec(name).checkpoint_formats)
    assert_same(converted.state_dict, ours)
    assert converted.options == {"decoder": True, "separable": False, "align_corners": True, "compat": "jfzhang95",
                                 "num_classes": 5, "decoder_convs": 2}


@pytest.mark.parametrize("name", ["deeplabv3plus_resnet50", "deeplabv3plus_mobilenetv2"])
def test_loading_a_vainf_file_reproduces_the_model(name: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    original = get_model_spec(name).build(**TINY, compat="vainf", decoder_convs=1, align_corners=False).eval()
    path = tmp_path / "best_deeplabv3plus.pth"
    torch.save({"model_state": rename(original.state_dict(), to_vainf), "cur_itrs": 1}, path)
    loaded = load_model(name, options={"width_multiplier": 0.125}, weights=path)
    assert loaded.options["decoder_convs"] == 1 and loaded.options["align_corners"] is False
    assert loaded.load_report is not None and loaded.load_report.left_random == ()
    x = torch.randn(1, 3, 65, 65)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.module(x), original(x), atol=0, rtol=0)


# --- real key names ----------------------------------------------------------------------------------------------

VAINF_RESNET101 = {  # network/_deeplab.py DeepLabHeadV3Plus + torchvision resnet101 (VOC, 21 classes)
    "backbone.conv1.weight": (64, 3, 7, 7), "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "backbone.layer3.22.conv2.weight": (256, 256, 3, 3), "backbone.layer4.2.bn3.running_var": (2048,),
    "classifier.project.0.weight": (48, 256, 1, 1), "classifier.project.1.running_mean": (48,),
    "classifier.aspp.convs.0.0.weight": (256, 2048, 1, 1), "classifier.aspp.convs.3.0.weight": (256, 2048, 3, 3),
    "classifier.aspp.convs.3.1.bias": (256,), "classifier.aspp.convs.4.1.weight": (256, 2048, 1, 1),
    "classifier.aspp.convs.4.2.weight": (256,), "classifier.aspp.project.0.weight": (256, 1280, 1, 1),
    "classifier.aspp.project.1.weight": (256,), "classifier.classifier.0.weight": (256, 304, 3, 3),
    "classifier.classifier.1.running_var": (256,), "classifier.classifier.3.weight": (21, 256, 1, 1),
    "classifier.classifier.3.bias": (21,),
}
VAINF_MOBILENET = {  # network/backbone/mobilenetv2.py; features[0:4], features[4:-1] keep their indices
    "backbone.low_level_features.0.0.weight": (32, 3, 3, 3), "backbone.low_level_features.1.conv.0.0.weight":
    (32, 1, 3, 3), "backbone.low_level_features.1.conv.1.weight": (16, 32, 1, 1),
    "backbone.low_level_features.3.conv.2.weight": (24, 144, 1, 1),
    "backbone.high_level_features.4.conv.0.0.weight": (144, 24, 1, 1),
    "backbone.high_level_features.17.conv.2.weight": (320, 960, 1, 1),
    "backbone.high_level_features.17.conv.3.bias": (320,), "classifier.project.0.weight": (48, 24, 1, 1),
    "classifier.aspp.convs.0.0.weight": (256, 320, 1, 1), "classifier.aspp.project.0.weight": (256, 1280, 1, 1),
    "classifier.classifier.3.weight": (19, 256, 1, 1),  # a Cityscapes checkpoint: 19 classes
}
JFZHANG95_RESNET = {  # modeling/aspp.py, decoder.py (with dropouts), backbone/resnet.py (ResNet-101)
    "backbone.conv1.weight": (64, 3, 7, 7), "backbone.layer4.0.downsample.1.weight": (2048,),
    "backbone.layer3.22.bn3.bias": (1024,), "aspp.aspp1.atrous_conv.weight": (256, 2048, 1, 1),
    "aspp.aspp4.atrous_conv.weight": (256, 2048, 3, 3), "aspp.aspp4.bn.running_mean": (256,),
    "aspp.global_avg_pool.1.weight": (256, 2048, 1, 1), "aspp.global_avg_pool.2.bias": (256,),
    "aspp.conv1.weight": (256, 1280, 1, 1), "aspp.bn1.weight": (256,), "decoder.conv1.weight": (48, 256, 1, 1),
    "decoder.bn1.weight": (48,), "decoder.last_conv.0.weight": (256, 304, 3, 3),
    "decoder.last_conv.1.weight": (256,), "decoder.last_conv.4.weight": (256, 256, 3, 3),
    "decoder.last_conv.5.running_var": (256,), "decoder.last_conv.8.weight": (21, 256, 1, 1),
    "decoder.last_conv.8.bias": (21,),
}
JFZHANG95_XCEPTION = {  # modeling/backbone/xception.py AlignedXception (block2 without a leading ReLU)
    "backbone.conv1.weight": (32, 3, 3, 3), "backbone.bn2.weight": (64,),
    "backbone.block1.rep.0.conv1.weight": (64, 1, 3, 3), "backbone.block1.rep.0.bn.weight": (64,),
    "backbone.block1.rep.0.pointwise.weight": (128, 64, 1, 1), "backbone.block1.rep.1.weight": (128,),
    "backbone.block1.rep.6.pointwise.weight": (128, 128, 1, 1), "backbone.block1.skip.weight": (128, 64, 1, 1),
    "backbone.block1.skipbn.running_mean": (128,), "backbone.block2.rep.0.conv1.weight": (128, 1, 3, 3),
    "backbone.block3.rep.1.pointwise.weight": (728, 256, 1, 1), "backbone.block3.rep.8.bias": (728,),
    "backbone.block12.rep.4.conv1.weight": (728, 1, 3, 3), "backbone.block20.rep.1.pointwise.weight":
    (728, 728, 1, 1), "backbone.block20.rep.4.pointwise.weight": (1024, 728, 1, 1),
    "backbone.block20.rep.7.pointwise.weight": (1024, 1024, 1, 1), "backbone.block20.skip.weight": (1024, 728, 1, 1),
    "backbone.conv3.conv1.weight": (1024, 1, 3, 3), "backbone.conv3.pointwise.weight": (1536, 1024, 1, 1),
    "backbone.conv4.bn.weight": (1536,), "backbone.conv5.pointwise.weight": (2048, 1536, 1, 1),
    "backbone.bn5.running_var": (2048,), "aspp.aspp1.atrous_conv.weight": (256, 2048, 1, 1),
    "decoder.conv1.weight": (48, 128, 1, 1), "decoder.last_conv.8.weight": (21, 256, 1, 1),
}
JFZHANG95_MOBILENET = {  # modeling/backbone/mobilenet.py (flat conv Sequentials, aliases of features)
    "backbone.features.0.0.weight": (32, 3, 3, 3), "backbone.features.1.conv.0.weight": (32, 1, 3, 3),
    "backbone.features.1.conv.3.weight": (16, 32, 1, 1), "backbone.features.1.conv.4.bias": (16,),
    "backbone.features.2.conv.0.weight": (96, 16, 1, 1), "backbone.features.2.conv.3.weight": (96, 1, 3, 3),
    "backbone.features.2.conv.6.weight": (24, 96, 1, 1), "backbone.features.17.conv.7.running_mean": (320,),
    "backbone.low_level_features.0.0.weight": (32, 3, 3, 3),
    "backbone.high_level_features.17.conv.6.weight": (320, 960, 1, 1),
    "aspp.aspp1.atrous_conv.weight": (256, 320, 1, 1), "decoder.conv1.weight": (48, 24, 1, 1),
    "decoder.last_conv.8.weight": (21, 256, 1, 1),
}
TORCHVISION_RESNET50 = {
    "conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,), "layer1.0.conv1.weight": (64, 64, 1, 1),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer3.5.conv3.weight": (1024, 256, 1, 1), "layer4.2.bn3.running_var": (2048,), "fc.weight": (1000, 2048),
    "fc.bias": (1000,),
}
TORCHVISION_MOBILENET_V2 = {
    "features.0.0.weight": (32, 3, 3, 3), "features.0.1.weight": (32,), "features.1.conv.0.0.weight": (32, 1, 3, 3),
    "features.1.conv.1.weight": (16, 32, 1, 1), "features.1.conv.2.running_var": (16,),
    "features.2.conv.0.0.weight": (96, 16, 1, 1), "features.2.conv.1.0.weight": (96, 1, 3, 3),
    "features.2.conv.2.weight": (24, 96, 1, 1), "features.17.conv.3.bias": (320,),
    "features.18.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (1000, 1280),
}


@pytest.mark.parametrize(("name", "wrapper", "keys", "dropped"), [
    ("deeplabv3plus_resnet101", "model_state", VAINF_RESNET101, 0),
    ("deeplabv3plus_mobilenetv2", "model_state", VAINF_MOBILENET, 0),
    ("deeplabv3plus_resnet101", "state_dict", JFZHANG95_RESNET, 0),
    ("deeplabv3plus_xception65", "state_dict", JFZHANG95_XCEPTION, 0),
    ("deeplabv3plus_mobilenetv2", "state_dict", JFZHANG95_MOBILENET, 2),  # the two alias keys
    ("deeplabv3plus_resnet50", None, TORCHVISION_RESNET50, 2),  # fc
    ("deeplabv3plus_mobilenetv2", None, TORCHVISION_MOBILENET_V2, 2),  # features.18, classifier
])
def test_real_key_names_land_on_full_size_parameters(name: str, wrapper: str | None,
                                                    keys: dict[str, tuple[int, ...]], dropped: int) -> None:
    state = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    spec = get_model_spec(name)
    converted = convert_checkpoint({wrapper: state} if wrapper else state, spec.checkpoint_formats)
    with torch.device("meta"):
        own = spec.build(**converted.options).state_dict()
    assert len(converted.state_dict) == len(keys) - dropped
    for key, value in converted.state_dict.items():
        assert key in own, f"{key} is not a parameter of {name}"
        assert tuple(own[key].shape) == tuple(value.shape), key


# --- torchvision backbones, mismatches ---------------------------------------------------------------------------

def test_torchvision_resnet_fills_the_backbone_and_reports_the_head(tmp_path: Path) -> None:
    ours = tiny_state("deeplabv3plus_resnet50")
    backbone = {k.removeprefix("backbone."): v for k, v in ours.items() if k.startswith("backbone.")}
    backbone |= {"fc.weight": torch.randn(1000, 256), "fc.bias": torch.randn(1000)}
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(backbone, path)
    with pytest.raises(CheckpointError, match=r"missing: .*aspp.*allow-partial"):
        load_model("deeplabv3plus_resnet50", options={"width_multiplier": 0.125}, weights=path)
    loaded = load_model("deeplabv3plus_resnet50", options={"width_multiplier": 0.125}, weights=path,
                        allow_partial=True)
    assert loaded.load_report is not None
    left = loaded.load_report.left_random
    assert left and not any(k.startswith("backbone.") for k in left)
    assert {"classifier.weight", "aspp.project.0.weight", "decoder.project.0.weight"} <= set(left)
    torch.testing.assert_close(loaded.module.state_dict()["backbone.layer4.2.conv3.weight"],
                               ours["backbone.layer4.2.conv3.weight"])


def test_torchvision_mobilenet_drops_the_classifier() -> None:
    ours = tiny_state("deeplabv3plus_mobilenetv2")
    tv = {k.removeprefix("backbone."): v for k, v in ours.items() if k.startswith("backbone.")}
    tv |= {"features.18.0.weight": torch.randn(1280, 40, 1, 1), "classifier.1.weight": torch.randn(1000, 1280)}
    converted = convert_checkpoint(tv, get_model_spec("deeplabv3plus_mobilenetv2").checkpoint_formats)
    assert_same(converted.state_dict, {k: v for k, v in ours.items() if k.startswith("backbone.")})


def test_mismatched_keys_are_all_listed() -> None:
    name = "deeplabv3plus_resnet50"
    ours = tiny_state(name, compat="vainf", decoder_convs=1, align_corners=False)
    theirs = rename(ours, to_vainf)
    del theirs["classifier.project.0.weight"]
    theirs["classifier.aspp.convs.5.0.weight"] = torch.zeros(1)
    theirs["classifier.classifier.3.weight"] = torch.zeros(7, 32, 1, 1)
    converted = convert_checkpoint({"model_state": theirs}, get_model_spec(name).checkpoint_formats)
    model = get_model_spec(name).build(**{**TINY, **converted.options, "num_classes": 5})
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(model, converted.state_dict, allow_partial=False, source=converted.source)
    message = str(info.value)
    assert "wrongly shaped: classifier.weight (checkpoint [7, 32, 1, 1], model [5, 32, 1, 1])" in message
    assert "unexpected: aspp.convs.5.0.weight" in message and "missing: decoder.project.0.weight" in message


def test_vainf_deeplabv3_and_separable_checkpoints_imply_their_options() -> None:
    formats = get_model_spec("deeplabv3plus_resnet50").checkpoint_formats
    separable = {"classifier.aspp.project.0.weight": torch.zeros(1),
                 "classifier.aspp.convs.1.0.body.0.weight": torch.zeros(1)}
    converted = convert_checkpoint({"model_state": separable}, formats)
    assert converted.options["separable"] and converted.options["decoder"] and converted.options["compat"] == "vainf"
    assert "aspp.convs.1.depthwise.weight" in converted.state_dict
    deeplabv3 = {"classifier.classifier.0.project.0.weight": torch.zeros(1),
                 "classifier.classifier.4.weight": torch.zeros(7, 256, 1, 1)}
    converted = convert_checkpoint({"model_state": deeplabv3}, formats)
    assert converted.options == {"decoder": False, "head_convs": 1, "separable": False, "align_corners": False,
                                 "compat": "vainf", "num_classes": 7}
    assert set(converted.state_dict) == {"aspp.project.0.weight", "classifier.weight"}


def test_plain_state_dicts_still_load() -> None:
    ours = tiny_state("deeplabv3plus_xception65")
    converted = convert_checkpoint({"state_dict": ours}, get_model_spec("deeplabv3plus_xception65").checkpoint_formats)
    assert converted.source == "state_dict" and converted.options == {}
    assert_same(converted.state_dict, ours)
