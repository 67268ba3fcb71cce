"""ResNet-50/101 (He et al. 2016, arXiv 1512.03385) as a dilated DeepLab backbone, in torchvision's layout.

torchvision's ResNet v1.5 (stride on the 3x3 conv, 7x7 stem) with its parameter names (conv1, bn1, layer1.0.conv1,
downsample.0/1...), so torchvision ImageNet weights and VainF/jfzhang95 DeepLab checkpoints load by name.
Deviation from the DeepLabv3+ TF reference: TF uses resnet_v1_101_beta (three 3x3 stem convs, stride in the last
unit of each block); no PyTorch repository ships that layout, so this backbone follows torchvision.

Output stride 16 replaces layer4's stride with dilation 2, output stride 8 also layer3's (dilation 2, layer4 4).
Dilation of the block that would have strided, by `compat`:
- "paper"/"vainf": torchvision's replace_stride_with_dilation - it keeps the previous rate (TF's rule: the rate
  grows only after the unit that would have strided).
- "jfzhang95": every block of a dilated stage runs at the stage rate, and layer4 uses the DeepLabv3 multi-grid
  (1, 2, 4): rates 2, 4, 8 at output stride 16, as jfzhang95/pytorch-deeplab-xception builds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deploykit.zoo.backbones import Backbone, scaled

_MULTI_GRID = (1, 2, 4)  # jfzhang95's layer4 unit rates
RESIDUAL_BN_SCALE = 0.2  # initial scale of each residual branch's last BN (random weights only)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def stage_plan(blocks: Sequence[int], output_stride: int, compat: str) -> list[tuple[int, list[int]]]:
    """(stride of the first block, dilation of each block) for layer1..layer4."""
    dilate = {16: (False, False, False, True), 8: (False, False, True, True)}[output_stride]
    plan: list[tuple[int, list[int]]] = []
    rate = 1
    for index, (count, dilated) in enumerate(zip(blocks, dilate, strict=True)):
        nominal_stride = 1 if index == 0 else 2
        if not dilated:
            plan.append((nominal_stride, [rate] * count))
            continue
        previous, rate = rate, rate * nominal_stride
        if compat == "jfzhang95":
            grid = _MULTI_GRID if index == 3 else (1,) * count
            plan.append((1, [rate * g for g in grid]))
        else:
            plan.append((1, [previous] + [rate] * (count - 1)))
    return plan


class ResNet(Backbone):
    """Bottleneck ResNet without the classifier; returns (layer4, layer1) features."""

    def __init__(self, blocks: Sequence[int], *, output_stride: int = 16, width_multiplier: float = 1.0,
                 compat: str = "paper") -> None:
        super().__init__()
        if compat == "jfzhang95" and blocks[3] != len(_MULTI_GRID):
            raise ValueError("jfzhang95's multi-grid needs three blocks in layer4")
        base = scaled(64, width_multiplier)
        self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = base
        layers = []
        for index, (stride, dilations) in enumerate(stage_plan(blocks, output_stride, compat)):
            width = base * 2**index
            layers.append(self._make_layer(in_channels, width, stride, dilations))
            in_channels = width * Bottleneck.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels = in_channels
        self.low_level_channels = base * Bottleneck.expansion
        _init_weights(self)

    @staticmethod
    def _make_layer(in_channels: int, width: int, stride: int, dilations: Sequence[int]) -> nn.Sequential:
        out_channels = width * Bottleneck.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        units = [Bottleneck(in_channels, width, stride=stride, dilation=dilations[0], downsample=downsample)]
        units += [Bottleneck(out_channels, width, stride=1, dilation=d, downsample=None) for d in dilations[1:]]
        return nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        return self.layer4(self.layer3(self.layer2(low_level))), low_level


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, Bottleneck):
            # Random weights (tests, exports before loading) must not blow up over 33 residual sums; a small
            # last-BN scale keeps activations O(1) while the branch still shapes the output (unlike zero init).
            nn.init.constant_(m.bn3.weight, RESIDUAL_BN_SCALE)
