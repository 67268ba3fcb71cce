"""A checkpoint given to a zoo model it does not fit names the zoo model it is of (deploykit.zoo.fitting): a VainF
MobileNetV2 checkpoint given to deeplabv3plus_resnet50 was refused with 'the weights under 'classifier.' taken
... unexpected: bias, weight', jfzhang95's ResNet-101 one given to ResNet-50 with 300 layer3 keys. And the option
a repository's checkpoints do not record (output_stride) is said to be taken at its default."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deploykit.errors import CheckpointError
from deploykit.zoo import get_model_spec
from deploykit.zoo.sources import load_model
from tests.zoo.test_checkpoints_deeplab import TINY, rename, tiny_state, to_jfzhang95, to_vainf

VAINF = {"compat": "vainf", "decoder_convs": 1, "align_corners": False}


def _vainf(name: str) -> dict[str, object]:
    return {"model_state": rename(tiny_state(name, **VAINF), to_vainf), "cur_itrs": 1}


def _jfzhang95(name: str) -> dict[str, object]:
    return {"state_dict": rename(tiny_state(name, compat="jfzhang95"), to_jfzhang95), "epoch": 3}


def _plain(name: str, **options: object) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return get_model_spec(name).build(**options).state_dict()


@pytest.mark.parametrize(("checkpoint", "asked", "options", "named"), [
    (lambda: _vainf("deeplabv3plus_mobilenetv2"), "deeplabv3plus_resnet50", TINY, "deeplabv3plus_mobilenetv2"),
    (lambda: _jfzhang95("deeplabv3plus_resnet101"), "deeplabv3plus_resnet50", TINY, "deeplabv3plus_resnet101"),
    (lambda: _plain("fcn8s", width=0.125), "fcn16s", {"width": 0.125}, "fcn8s"),
], ids=["vainf mobilenet as resnet50", "jfzhang95 resnet101 as resnet50", "fcn8s as fcn16s"])
def test_a_checkpoint_of_another_zoo_model_names_it(checkpoint: object, asked: str, options: dict[str, object],
                                                     named: str, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint(), path)  # type: ignore[operator]
    with pytest.raises(CheckpointError) as info:
        load_model(asked, options=options, weights=path)
    assert f"it is a checkpoint of {named}: give {named} as the model" in str(info.value)
    load_model(named, options=options, weights=path)  # and it does load there


def test_backbone_weights_of_another_backbone_name_the_model_they_fit_in_part(tmp_path: Path) -> None:
    backbone = {k.removeprefix("backbone."): v for k, v in tiny_state("deeplabv3plus_resnet50").items()
                if k.startswith("backbone.")}
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save({**backbone, "fc.weight": torch.zeros(10, 8), "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(CheckpointError) as info:
        load_model("deeplabv3plus_mobilenetv2", options=TINY, weights=path)
    assert ("fit part of deeplabv3plus_resnet50 or deeplabv3plus_resnet101: give deeplabv3plus_resnet50 as the "
            "model, with --allow-partial") in str(info.value)


def test_a_checkpoint_of_no_zoo_model_is_still_named_by_its_keys(tmp_path: Path) -> None:
    state = _vainf("deeplabv3plus_mobilenetv2")
    state["model_state"]["backbone.stage4.0.weight"] = torch.zeros(1)  # type: ignore[index]
    path = tmp_path / "hrnet.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"unexpected: backbone\.features\.0\.0\.weight") as info:
        load_model("deeplabv3plus_resnet50", options=TINY, weights=path)
    assert "it is a checkpoint of" not in str(info.value)


@pytest.mark.parametrize(("layout", "given"), [(_vainf, {}), (_jfzhang95, {}), (_vainf, {"output_stride": 8})])
def test_an_output_stride_the_checkpoint_does_not_record_is_said_to_be_the_default(
        layout: object, given: dict[str, object], tmp_path: Path) -> None:
    name = "deeplabv3plus_resnet50" if layout is _vainf else "deeplabv3plus_resnet101"
    path = tmp_path / "best.pth"
    torch.save(layout(name), path)  # type: ignore[operator]
    loaded = load_model(name, options={**TINY, **given}, weights=path)
    notes = " ".join(loaded.weight_notes())
    said = "checkpoints do not record output_stride: built with output_stride=16; if it was trained with another"
    assert (said in notes) is not given, notes
