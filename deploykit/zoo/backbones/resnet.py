"""ResNet-50/101 (He et al. 2016, arXiv 1512.03385) as a dilated DeepLab backbone, in two layouts.

layout "torchvision" (default): torchvision's ResNet v1.5 (stride on the 3x3 conv of the FIRST unit of layer2-4,
one 7x7 stem conv) with its parameter names (conv1, bn1, layer1.0.conv1, downsample.0/1...), so torchvision
ImageNet weights and VainF/jfzhang95 DeepLab checkpoints load by name. No PyTorch repository ships the TF layout.

layout "tf_beta": TF-slim's resnet_v1_{50,101}_beta, the backbone of the DeepLabv3+ paper's ResNet-101 figures
(tensorflow/models research/deeplab/core/resnet_v1_beta.py): a deep stem `stem.conv1_1/1_2/1_3` (3x3/2 64, 3x3 64,
3x3 128, each BN+ReLU), stride in the LAST unit of block1-3 (its shortcut subsamples with a 1x1 max-pool of that
stride when the depth does not change), multi-grid (1, 1, 1) (TF DeepLab's default). The decoder's low-level
feature is TF DeepLab's end point block1/unit_2/bottleneck_v1/conv3: the second unit's residual branch after its
last BN, before the shortcut sum and ReLU (stride 4, the unit before block1's stride). Deviations: module names
follow this file (layer1..4 for block1..4); the 3x3/2 max-pool pads symmetrically (TF's SAME equals that for odd
sizes such as 513); TF DeepLab feeds this variant [-1, 1] inputs, the registry keeps ImageNet normalisation.

Dilation in both layouts follows TF-slim's stack_blocks_dense (see `stack_blocks_dense`) except for
compat="jfzhang95": every unit of a dilated stage runs at the stage rate, and layer4 uses the DeepLabv3 multi-grid
(1, 2, 4): rates 2, 4, 8 at output stride 16, as jfzhang95/pytorch-deeplab-xception builds it. For torchvision's
layout TF's rule is torchvision's replace_stride_with_dilation (the unit that would have strided keeps the
previous rate): output stride 16 -> layer4 rates 1, 2, 2; 8 -> layer3 1, 2..., layer4 2, 4, 4. For tf_beta at
output stride 16 every block3 unit runs at rate 1 and stride 1, block4 at rate 2; at 8 block2 at rate 1, block3
at 2, block4 at 4.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from deploykit.zoo.backbones.base import Backbone, scaled
from deploykit.zoo.layers import ConvBNReLU

LAYOUTS = ("torchvision", "tf_beta")
BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
_MULTI_GRID = (1, 2, 4)  # jfzhang95's layer4 unit rates
RESIDUAL_BN_SCALE = 0.2  # initial scale of each residual branch's last BN (random weights only)
UnitPlan = list[list[tuple[int, int]]]  # (stride, dilation) of every unit, per stage


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4 channels), each with BN; ReLU after the residual sum."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, *, stride: int, dilation: int,
                 downsample: nn.Module | None) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch up to its last BN (TF's `conv3` end point)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


def stack_blocks_dense(strides: Sequence[Sequence[int]], output_stride: int) -> UnitPlan:
    """TF-slim's rule for the (stride, dilation) of each unit given its nominal stride, after the stride-4 stem:
    once the network is at `output_stride`, a unit runs at stride 1 with the current rate, and the rate is
    multiplied by its nominal stride for the units after it."""
    current, rate = 4, 1
    plan: UnitPlan = []
    for stage in strides:
        units = []
        for nominal in stage:
            if current == output_stride:
                units.append((1, rate))
                rate *= nominal
            else:
                units.append((nominal, rate))  # rate is still 1 here
                current *= nominal
        plan.append(units)
    return plan


def stage_plan(blocks: Sequence[int], output_stride: int, compat: str) -> list[tuple[int, list[int]]]:
    """torchvision layout: (stride of the first block, dilation of each block) for layer1..layer4."""
    if compat != "jfzhang95":
        nominal = [[2 if index > 0 and unit == 0 else 1 for unit in range(count)]
                   for index, count in enumerate(blocks)]
        return [(units[0][0], [d for _, d in units]) for units in stack_blocks_dense(nominal, output_stride)]
    dilate = {16: (False, False, False, True), 8: (False, False, True, True)}[output_stride]
    plan: list[tuple[int, list[int]]] = []
    rate = 1
    for index, (count, dilated) in enumerate(zip(blocks, dilate, strict=True)):
        nominal_stride = 1 if index == 0 else 2
        if not dilated:
            plan.append((nominal_stride, [rate] * count))
            continue
        rate *= nominal_stride
        grid = _MULTI_GRID if index == 3 else (1,) * count
        plan.append((1, [rate * g for g in grid]))
    return plan


def unit_plan(blocks: Sequence[int], output_stride: int, compat: str, layout: str) -> UnitPlan:
    """(stride, dilation) of every unit of layer1..layer4 in `layout`."""
    if layout == "tf_beta":  # stride 2 in the last unit of block1-3
        nominal = [[1] * (count - 1) + [2 if index < 3 else 1] for index, count in enumerate(blocks)]
        return stack_blocks_dense(nominal, output_stride)
    return [[(stride if unit == 0 else 1, d) for unit, d in enumerate(dilations)]
            for stride, dilations in stage_plan(blocks, output_stride, compat)]


def _deep_stem(width_multiplier: float) -> nn.Sequential:
    """resnet_v1_beta's root block: three 3x3 convs (64 stride 2, 64, 128), each BN+ReLU; TF's scope names."""
    c64, c128 = scaled(64, width_multiplier), scaled(128, width_multiplier)
    return nn.Sequential(OrderedDict(
        conv1_1=ConvBNReLU(3, c64, 3, stride=2), conv1_2=ConvBNReLU(c64, c64, 3), conv1_3=ConvBNReLU(c64, c128, 3)))


class ResNet(Backbone):
    """Bottleneck ResNet without the classifier; returns (layer4, low-level) features."""

    def __init__(self, blocks: Sequence[int], *, output_stride: int = 16, width_multiplier: float = 1.0,
                 compat: str = "paper", layout: str = "torchvision") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"resnet_layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout == "tf_beta" and compat != "paper":
            raise ValueError(f"compat={compat!r} reproduces a PyTorch repository, whose ResNet has torchvision's "
                             "layout: use resnet_layout='torchvision' with it")
        if compat == "jfzhang95" and blocks[3] != len(_MULTI_GRID):
            raise ValueError("jfzhang95's multi-grid needs three blocks in layer4")
        if not width_multiplier > 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier!r}")
        self.layout = layout
        base = scaled(64, width_multiplier)
        if layout == "tf_beta":
            self.stem = _deep_stem(width_multiplier)
            in_channels = scaled(128, width_multiplier)
        else:
            self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(base)
            self.relu = nn.ReLU(inplace=True)
            in_channels = base
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers = []
        for index, units in enumerate(unit_plan(blocks, output_stride, compat, layout)):
            width = base * 2**index
            layers.append(self._make_layer(in_channels, width, units, subsample_shortcut=layout == "tf_beta"))
            in_channels = width * Bottleneck.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels = in_channels
        self.low_level_channels = base * Bottleneck.expansion
        _init_weights(self)

    @staticmethod
    def _make_layer(in_channels: int, width: int, units: Sequence[tuple[int, int]], *,
                    subsample_shortcut: bool) -> nn.Sequential:
        """Units (stride, dilation). A shortcut projects (1x1 conv + BN, strided) where the depth changes, or
        where it strides unless `subsample_shortcut` (TF-slim: a 1x1 max-pool of that stride)."""
        out_channels = width * Bottleneck.expansion
        layer = []
        for stride, dilation in units:
            downsample: nn.Module | None = None
            if in_channels != out_channels or (stride != 1 and not subsample_shortcut):
                downsample = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )
            elif stride != 1:
                downsample = nn.MaxPool2d(1, stride=stride)
            layer.append(Bottleneck(in_channels, width, stride=stride, dilation=dilation, downsample=downsample))
            in_channels = out_channels
        return nn.Sequential(*layer)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.layout == "tf_beta":
            x = self.maxpool(self.stem(x))
            units = [unit for unit in self.layer1 if isinstance(unit, Bottleneck)]
            for unit in units[:-2]:
                x = unit(x)
            low_level = units[-2].residual(x)  # block1/unit_2/bottleneck_v1/conv3
            x = units[-1](torch.relu(low_level + units[-2].shortcut(x)))
        else:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = low_level = self.layer1(x)
        return self.layer4(self.layer3(self.layer2(x))), low_level


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, Bottleneck):
            # Random weights (tests, exports before loading) must not blow up over 33 residual sums; a small
            # last-BN scale keeps activations O(1) while the branch still shapes the output (unlike zero init).
            nn.init.constant_(m.bn3.weight, RESIDUAL_BN_SCALE)
