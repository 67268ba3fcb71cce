"""Modified aligned Xception-65, the DeepLabv3+ backbone (Chen et al. 2018, arXiv 1802.02611, section 3.2).

Changes to Xception (Chollet 2017) made by DeepLabv3+, as in the TF reference (research/deeplab/core/xception.py):
more middle-flow blocks (16), every max pooling replaced by a strided separable convolution, BN after each
depthwise convolution. Layout:
  entry:  conv 3x3/2 32, conv 3x3 64; modules 128, 256, 728 (stride 2 each, 1x1-conv shortcut)
  middle: 16 modules 728 (identity shortcut)
  exit:   module 728-1024-1024 (stride 2, conv shortcut); module 1536-1536-2048 (no shortcut)
A module is three separable convs with the stride on the third. In entry/middle/exit-1 each separable conv is
ReLU -> depthwise -> BN -> pointwise -> BN; the last module has ReLU after both BNs instead (the TF
`activation_fn_in_separable_conv`), so the paper's "BN and ReLU after each depthwise" holds only there: the
reference code is followed. Output stride 16: exit module 1 runs unstrided, the last at rate 2; output stride 8:
entry module 3 unstrided too, middle rate 2, exit rates 2 and 4. The decoder's low-level features are the
reference's `entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise` (256 channels, stride 4).

Top-level names follow jfzhang95/pytorch-deeplab-xception (conv1, bn1, conv2, bn2, block1..block20); its last
module (conv3-5 with bn3-5) is `block21` here. compat="jfzhang95" reproduces that repository's
computation: shortcuts taken after the pre-activation ReLU (its in-place ReLU), low-level features = ReLU of
block1 (128 channels), the last module as ReLU -> depthwise -> BN -> pointwise -> BN -> ReLU, and exit module 1's
third conv undilated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.zoo.backbones.base import Backbone, scaled
from deploykit.zoo.backbones.resnet import RESIDUAL_BN_SCALE
from deploykit.zoo.layers import SeparableConv2d, init_conv_weights

Skip = Literal["conv", "sum", "none"]


class XceptionModule(nn.Module):
    """Three separable convs (stride on the third) plus a shortcut: 1x1 conv + BN, identity, or none."""

    def __init__(self, in_channels: int, depths: Sequence[int], *, stride: int = 1,
                 rates: Sequence[int] = (1, 1, 1), skip: Skip = "conv", relu_inside: bool = False,
                 jfzhang95: bool = False) -> None:
        super().__init__()
        # TF: ReLU before each separable conv, unless the convs carry their own ReLUs (last module).
        # jfzhang95's last module: ReLU before, none after the depthwise, one after the pointwise BN.
        self.pre_relu = not relu_inside or jfzhang95
        relu_depthwise = relu_inside and not jfzhang95
        convs = []
        channels = in_channels
        for index, (depth, rate) in enumerate(zip(depths, rates, strict=True)):
            convs.append(SeparableConv2d(channels, depth, 3, stride=stride if index == 2 else 1, dilation=rate,
                                         relu_depthwise=relu_depthwise, relu_pointwise=relu_inside))
            channels = depth
        self.convs = nn.ModuleList(convs)
        self.skip_type = skip
        self.shortcut_after_relu = jfzhang95
        if skip == "conv":
            self.skip = nn.Conv2d(in_channels, depths[-1], 1, stride=stride, bias=False)
            self.skip_bn = nn.BatchNorm2d(depths[-1])

    def forward_with_inner(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(module output, output of the second separable conv): the latter is DeepLabv3+'s low-level feature."""
        h = x
        inner = []
        for conv in self.convs:
            h = conv(F.relu(h) if self.pre_relu else h)
            inner.append(h)
        shortcut = F.relu(x) if self.shortcut_after_relu else x
        if self.skip_type == "conv":
            h = h + self.skip_bn(self.skip(shortcut))
        elif self.skip_type == "sum":
            h = h + shortcut
        return h, inner[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_inner(x)[0]


class Xception65(Backbone):
    """Modified aligned Xception-65 without the classifier; returns (exit-flow output, low-level features)."""

    def __init__(self, *, output_stride: int = 16, width_multiplier: float = 1.0, compat: str = "paper") -> None:
        super().__init__()
        if compat == "vainf":
            raise ValueError("VainF/DeepLabV3Plus-Pytorch has no Xception-65 model; use compat 'paper' or "
                             "'jfzhang95'")
        jf = compat == "jfzhang95"
        self.jfzhang95 = jf
        c = [scaled(n, width_multiplier) for n in (32, 64, 128, 256, 728, 1024, 1536, 2048)]
        os8 = output_stride == 8
        middle_rate, exit_rates = (2, (2, 4)) if os8 else (1, (1, 2))

        self.conv1 = nn.Conv2d(3, c[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.conv2 = nn.Conv2d(c[0], c[1], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c[1])
        self.relu = nn.ReLU(inplace=True)
        entry = [
            XceptionModule(c[1], (c[2],) * 3, stride=2, jfzhang95=jf),
            XceptionModule(c[2], (c[3],) * 3, stride=2, jfzhang95=jf),
            XceptionModule(c[3], (c[4],) * 3, stride=1 if os8 else 2, jfzhang95=jf),
        ]
        middle = [XceptionModule(c[4], (c[4],) * 3, rates=(middle_rate,) * 3, skip="sum", jfzhang95=jf)
                  for _ in range(16)]
        exit_first = (exit_rates[0], exit_rates[0], 1 if jf else exit_rates[0])
        exit_flow = [
            XceptionModule(c[4], (c[4], c[5], c[5]), rates=exit_first, jfzhang95=jf),
            XceptionModule(c[5], (c[6], c[6], c[7]), rates=(exit_rates[1],) * 3, skip="none", relu_inside=True,
                           jfzhang95=jf),
        ]
        for index, module in enumerate(entry + middle + exit_flow, start=1):
            self.add_module(f"block{index}", module)
        self.out_channels = c[7]
        self.low_level_channels = c[2] if jf else c[3]
        init_conv_weights(self)
        for block in self.blocks():
            last = block.convs[-1]
            if block.skip_type != "none" and isinstance(last, SeparableConv2d):
                # keep random activations O(1) across 19 residual sums (as in ResNet)
                nn.init.constant_(last.pointwise_bn.weight, RESIDUAL_BN_SCALE)

    def blocks(self) -> list[XceptionModule]:
        return [getattr(self, f"block{i}") for i in range(1, 22)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        blocks = self.blocks()
        x = blocks[0](x)
        if self.jfzhang95:
            x = low_level = F.relu(x)
            x = blocks[1](x)
        else:
            x, low_level = blocks[1].forward_with_inner(x)
        for block in blocks[2:]:
            x = block(x)
        return x, low_level
