"""MobileNetV2 (Sandler et al. 2018, arXiv 1801.04381) as a dilated DeepLab backbone, in torchvision's layout.

`features.0` (stem) .. `features.17` (the 320-channel block) with torchvision's parameter names; the final
1x1 conv to 1280 channels (`features.18`) and the classifier are dropped, as in DeepLab. Low-level features are
the output of `features.3` (24 channels, stride 4), as in VainF and jfzhang95 (the TF reference takes
`layer_4/depthwise_output` instead). Output stride 16 dilates the 160-channel stage, 8 also the 64/96 stages.

`compat` reproduces the PyTorch repositories' computation:
- "paper": zero padding on the depthwise conv; the block that would have strided keeps the previous rate
  (TF mobilenet's and torchvision's rule).
- "vainf": the stem conv is unpadded (VainF's ConvBNReLU has padding 0), and every block pads its *input*
  (`fixed_padding`) before the 1x1 expansion, so the border seen by the depthwise conv is
  ReLU6(BN(conv(0))), not zero.
- "jfzhang95": that input padding too, and a dilated stage runs all its blocks at the stage's previous rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.zoo.backbones.base import Backbone
from deploykit.zoo.layers import init_conv_weights

# expansion t, channels c, repeats n, stride s (the paper's Table 2)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1))
_LOW_LEVEL_INDEX = 3  # features.3: the last 24-channel block


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never dropping more than 10% (the TF/torchvision rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias) -> BN -> ReLU6; keys `0.*`, `1.*` like torchvision's Conv2dNormActivation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, groups: int = 1, padding: int | None = None) -> None:
        pad = dilation * (kernel_size - 1) // 2 if padding is None else padding
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, dilation=dilation,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """[1x1 expand ->] 3x3 depthwise (stride, dilation) -> 1x1 linear projection; residual when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, dilation: int, expand_ratio: int,
                 pad_input: bool) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        # pad_input: the VainF/jfzhang95 form, padding the block input rather than the depthwise input.
        self.input_padding = dilation if pad_input else 0
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, 1))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden,
                        padding=0 if pad_input else None),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(x, [self.input_padding] * 4) if self.input_padding else x
        out = self.conv(h)
        return x + out if self.use_residual else out


def block_plan(output_stride: int, compat: str) -> list[tuple[int, int, int, int, int]]:
    """(expansion, channels, stride, dilation, stage index) of every inverted-residual block."""
    plan = []
    current_stride, rate = 2, 1  # after the stem
    for stage, (t, c, n, s) in enumerate(_SETTINGS):
        if current_stride == output_stride:
            previous, rate = rate, rate * s
            first = previous
            later = previous if compat == "jfzhang95" else rate
            stride = 1
        else:
            current_stride *= s
            first = later = rate
            stride = s
        plan.append((t, c, stride, first, stage))
        plan += [(t, c, 1, later, stage)] * (n - 1)
    return plan


class MobileNetV2(Backbone):
    """MobileNetV2 features up to the 320-channel block; returns (features.17, features.3) outputs."""

    def __init__(self, *, output_stride: int = 16, width_multiplier: float = 1.0, compat: str = "paper") -> None:
        super().__init__()
        pad_input = compat in ("vainf", "jfzhang95")
        channels = make_divisible(32 * width_multiplier)
        layers: list[nn.Module] = [ConvBNReLU6(3, channels, 3, stride=2, padding=0 if compat == "vainf" else 1)]
        for t, c, stride, dilation, _ in block_plan(output_stride, compat):
            out = make_divisible(c * width_multiplier)
            layers.append(InvertedResidual(channels, out, stride=stride, dilation=dilation, expand_ratio=t,
                                           pad_input=pad_input))
            channels = out
        self.features = nn.Sequential(*layers)
        self.out_channels = channels
        self.low_level_channels = make_divisible(24 * width_multiplier)
        init_conv_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low_level = x
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == _LOW_LEVEL_INDEX:
                low_level = x
        return x, low_level
