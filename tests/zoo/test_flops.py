"""Multiply-adds of DeepLabv3+ against the published figures (513x513 input).

Models are built and counted on the meta device: shapes only, no arithmetic, so full-size counts take about a
second each and run in the default suite.

Counting conventions (deploykit.zoo.flops):
- atrous="dense" counts one multiply-add per weight use of every conv (the papers' convention). It reproduces the
  paper's Xception-65 + decoder + SC figure (54.17 G) and VainF's README figures for our torchvision layouts.
- atrous="tf" also counts the positions TF computes and crops for an atrous conv (SpaceToBatchND pads each side n
  to ceil(n / r) * r: 33 -> 36 for the ASPP rates 6/12/18 at output stride 16). The paper's figures for *dense*
  atrous convs need it: Xception-65 + decoder without SC (89.76 G), ResNet-101 (101.28 G, 81.02 G).
- The paper's ResNet-101 is TF's resnet_v1_101_beta (three 3x3 stem convs, stride in the last unit of each
  block): resnet_layout="tf_beta". A hand count below, independent of the model code, equals the counter on our
  model in both layouts and both conventions, which validates the layouts and the "tf" convention.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest

from deploykit.zoo import get_model_spec
from deploykit.zoo.flops import Complexity, complexity_at, count_complexity

SIZE = 513


def count(name: str, atrous: str = "dense", **options: Any) -> Complexity:
    return complexity_at(functools.partial(get_model_spec(name).build, **options), (1, 3, SIZE, SIZE),
                         atrous=atrous)


@functools.cache
def resnet101(layout: str, atrous: str, output_stride: int = 16, decoder: bool = True) -> Complexity:
    """Cached: a full-size ResNet-101 count takes about 1.5 s even on the meta device."""
    return count("deeplabv3plus_resnet101", atrous, resnet_layout=layout, output_stride=output_stride,
                 decoder=decoder)


def within(value: float, target: float, tolerance: float = 0.02) -> bool:
    return abs(value - target) <= tolerance * target


def test_xception65_decoder_separable_matches_the_paper() -> None:
    c = count("deeplabv3plus_xception65", separable=True, output_stride=16)
    assert within(c.madds, 54.17e9), c.madds / 1e9  # measured 54.04 G (-0.25%)
    assert c.params == 41_055_413  # no paper figure; guards the architecture
    tf = count("deeplabv3plus_xception65", atrous="tf", separable=True)
    assert c.madds < tf.madds and within(tf.madds, 54.17e9)  # depthwise atrous convs are padded too


def test_xception65_decoder_dense_matches_the_paper_with_tf_atrous_counting() -> None:
    name = "deeplabv3plus_xception65"
    tf_counted = count(name, atrous="tf", separable=False).madds
    assert within(tf_counted, 89.76e9), tf_counted / 1e9  # 89.61 G (-0.17%)
    plain = count(name, separable=False).madds
    assert not within(plain, 89.76e9)  # 86.68 G (-3.4%): the dense ASPP's padded positions are missing


@pytest.mark.parametrize(("name", "vainf_gmacs"), [
    ("deeplabv3plus_mobilenetv2", 17.0), ("deeplabv3plus_resnet50", 62.7), ("deeplabv3plus_resnet101", 83.4)])
def test_vainf_readme_figures(name: str, vainf_gmacs: float) -> None:
    """VainF/DeepLabV3Plus-Pytorch's README lists these as "FLOPs" at 513x513; they are multiply-adds."""
    c = count(name, compat="vainf", decoder_convs=1, align_corners=False)
    assert within(c.madds, vainf_gmacs * 1e9), c.madds / 1e9


@pytest.mark.parametrize(("decoder", "paper", "params"), [
    (True, 101.28e9, 59_468_085),  # measured 101.22 G (-0.06%)
    # DeepLabv3 (no decoder): 79.46 G, -1.93% - inside 2% but only just. Nothing in the TF reference we could
    # find accounts for the other 1.56 G (the ASPP, backbone and logits are the same as with the decoder, whose
    # 101.28 - 81.02 = 20.26 G we match to 0.5%); the paper's table may count something outside the network.
    (False, 81.02e9, 58_164_437),
])
def test_paper_resnet101_figures_with_the_tf_beta_layout_and_tf_atrous_counting(
        decoder: bool, paper: float, params: int) -> None:
    c = resnet101("tf_beta", "tf", decoder=decoder)
    assert within(c.madds, paper), c.madds / 1e9
    assert c.params == params  # no paper figure; guards the architecture
    # Both the layout and the convention are needed: torchvision + dense 92.82 / 71.06 G, tf_beta + dense
    # 97.81 / 76.05 G, torchvision + tf 96.07 / 74.31 G.
    assert not within(resnet101("tf_beta", "dense", decoder=decoder).madds, paper)
    assert not within(resnet101("torchvision", "tf", decoder=decoder).madds, paper)


def test_the_tf_convention_pads_only_stride_1_atrous_convs() -> None:
    from torch import nn

    def madds(conv: nn.Conv2d, atrous: str) -> int:
        return count_complexity(conv, (1, 4, 33, 33), atrous=atrous).madds

    per_position = 4 * 9 * 8
    atrous = nn.Conv2d(4, 8, 3, padding=6, dilation=6, bias=False)
    assert madds(atrous, "dense") == 33 * 33 * per_position and madds(atrous, "tf") == 36 * 36 * per_position
    plain = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    assert madds(plain, "tf") == madds(plain, "dense")
    with pytest.raises(ValueError, match="atrous"):
        madds(plain, "tensorflow")


# --- analytic ResNet-101 DeepLab --------------------------------------------------------------------------------

def _out(n: int, stride: int) -> int:
    return (n - 1) // stride + 1  # symmetric padding (PyTorch) = TF's explicit conv2d_same padding here


def _positions(n: int, rate: int, tf_atrous: bool) -> int:
    side = math.ceil(n / rate) * rate if tf_atrous and rate > 1 else n
    return side * side


def resnet101_deeplab_madds(*, layout: str, output_stride: int, decoder: bool, tf_atrous: bool,
                            num_classes: int = 21) -> int:
    """DeepLabv3(+) with ResNet-101 at 513x513, counted by hand. layout "torchvision": 7x7 stem, stride in the
    first unit of layer2-4 (the strided unit keeps the previous rate). "tf_beta": 3x3 stem convs 64, 64, 128,
    stride in the last unit of block1-3 (TF's rule: rate grows after the unit that would have strided)."""
    h = _out(SIZE, 2)
    total = h * h * (3 * 64 * 9 + 64 * 64 * 9 + 64 * 128 * 9) if layout == "tf_beta" else h * h * 3 * 64 * 49
    channels = 128 if layout == "tf_beta" else 64
    h, current, rate = _out(h, 2), 4, 1
    low_level = h
    for index, (units, width) in enumerate(zip((3, 4, 23, 3), (64, 128, 256, 512), strict=True)):
        depth = 4 * width
        for unit in range(units):
            nominal = 2 if index > 0 and unit == 0 and layout == "torchvision" else 1
            if layout == "tf_beta" and index < 3 and unit == units - 1:
                nominal = 2
            unit_rate = rate
            stride = nominal
            if nominal == 2 and current == output_stride:
                stride, rate = 1, rate * 2  # this unit keeps unit_rate, the next ones get the new rate
            elif nominal == 2:
                current *= 2
            h_out = _out(h, stride)
            if channels != depth:
                total += h_out * h_out * channels * depth  # projection shortcut (TF subsamples otherwise)
            total += h * h * channels * width + _positions(h_out, unit_rate, tf_atrous) * width * width * 9
            total += h_out * h_out * width * depth
            channels, h = depth, h_out
        if index == 0:
            low_level = h if layout == "torchvision" else _out(SIZE, 4)  # TF: block1/unit_2, before its stride
    rates = {16: (6, 12, 18), 8: (12, 24, 36)}[output_stride]
    total += h * h * (channels * 256 + 5 * 256 * 256) + channels * 256  # 1x1, projection, image pooling
    total += sum(_positions(h, r, tf_atrous) for r in rates) * channels * 256 * 9
    if decoder:
        total += low_level**2 * (256 * 48 + 304 * 256 * 9 + 256 * 256 * 9 + 256 * num_classes)
    else:
        total += h * h * 256 * num_classes
    return total


@pytest.mark.parametrize(("layout", "output_stride", "decoder"), [
    ("torchvision", 16, True), ("torchvision", 8, True), ("tf_beta", 16, True), ("tf_beta", 16, False),
    ("tf_beta", 8, True)])
@pytest.mark.parametrize("atrous", ["dense", "tf"])
def test_analytic_resnet101_equals_the_counter_on_our_model(layout: str, output_stride: int, decoder: bool,
                                                            atrous: str) -> None:
    measured = resnet101(layout, atrous, output_stride, decoder).madds
    analytic = resnet101_deeplab_madds(layout=layout, output_stride=output_stride, decoder=decoder,
                                       tf_atrous=atrous == "tf")
    assert analytic == measured
