"""U-Net: Ronneberger, Fischer & Brox, "U-Net: convolutional networks for biomedical image segmentation",
MICCAI 2015 (arXiv 1505.04597), Figure 1.

The paper's configuration: two unpadded 3x3 convolutions + ReLU per level with 64, 128, 256, 512, 1024 channels,
2x2 max pooling, 2x2 up-convolutions (transposed, stride 2) halving the channels, the contracting path's map
centre-cropped and concatenated, and a 1x1 convolution to 2 classes; dropout at the end of the contracting path
(training only). A 572x572 tile gives a 388x388 map; 31.03 M parameters. He-normal initialisation, as the paper.

Valid (unpadded) sizes: every pooled map must have an even size, so an input tile is 16 k + 60 pixels, and the
output, 16 k - 124 pixels, must be positive: 188 (-> 4), 204 (-> 20), ..., 572 (-> 388). `valid_unet_output`
computes the output size and names the nearest valid sizes otherwise; the model raises InputError on a
size that does not tile (instead of silently cropping). With padded=True the convolutions are
zero-padded and the output has the input's size (H, W multiples of 16).

Deviations: in_channels defaults to 3 (RGB, as deploykit feeds images; the paper's EM tiles are 1-channel, use
in_channels=1). `width` scales the channel counts (64 is the paper) for the small test variant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deploykit.errors import InputError
from deploykit.zoo._registry import ModelSpec, Preprocessing, register_model

DEPTH = 4  # poolings
BASE_CHANNELS = 64


def valid_unet_output(size: int) -> int:
    """The output side of the unpadded U-Net for an input side `size`; ValueError naming valid sizes otherwise."""
    if (size - 60) % 16 == 0 and size >= 188:
        return size - 184
    below = size - (size - 60) % 16
    nearest = "188" if below < 188 else f"{below} or {below + 16}"
    raise ValueError(
        f"the unpadded U-Net needs input sides of 16k+60 >= 188 (188, 204, ..., 572, ...); {size} does not tile, "
        f"use {nearest}, or padded=True"
    )


def check_unet_size(height: int, width: int, *, padded: bool = False) -> None:
    """InputError (deploykit's error for an unusable shape) naming valid sizes when the sides do not tile."""
    try:
        for side in (height, width):
            if padded and side % 2**DEPTH:
                below = side - side % 2**DEPTH
                nearest = f"{below} or {below + 2**DEPTH}" if below else f"{2**DEPTH}"
                raise ValueError(f"the padded U-Net needs sides that are multiples of 16; {side} is not, use "
                                 f"{nearest}")
            if not padded:
                valid_unet_output(side)
    except ValueError as exc:
        raise InputError(f"input {height}x{width}: {exc}") from exc


def _size_rule(size: tuple[int, int], options: Mapping[str, Any]) -> None:
    """The spec's size_rule: the exported graph crops whatever it is given, so runners refuse by this."""
    check_unet_size(*size, padded=bool(options.get("padded", False)))


def _double_conv(in_ch: int, out_ch: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=padding),
        nn.ReLU(inplace=True),
    )


def _center_crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    top = (x.shape[2] - like.shape[2]) // 2
    left = (x.shape[3] - like.shape[3]) // 2
    return x[:, :, top : top + like.shape[2], left : left + like.shape[3]]


class UNet(nn.Module):
    """U-Net; unpadded: input sides 16k+60, output sides 16k-124; padded: sides multiples of 16, same size."""

    def __init__(self, *, num_classes: int = 2, in_channels: int = 3, width: float = 1.0,
                 padded: bool = False) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.padded = padded
        pad = 1 if padded else 0
        channels = [max(1, round(BASE_CHANNELS * width)) * 2**level for level in range(DEPTH + 1)]
        self.down = nn.ModuleList()
        in_ch = in_channels
        for ch in channels:
            self.down.append(_double_conv(in_ch, ch, pad))
            in_ch = ch
        self.dropout = nn.Dropout2d(0.5)
        self.upconv = nn.ModuleList()
        self.up = nn.ModuleList()
        for ch in reversed(channels[:-1]):
            self.upconv.append(nn.ConvTranspose2d(2 * ch, ch, 2, stride=2))
            self.up.append(_double_conv(2 * ch, ch, pad))
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and not module.weight.is_meta:  # meta: counting
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                assert module.bias is not None
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():  # eager only: a traced size is not a Python int
            check_unet_size(x.shape[2], x.shape[3], padded=self.padded)
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < DEPTH:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        x = self.dropout(x)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(skips), strict=True):
            x = upconv(x)
            x = block(torch.cat([_center_crop(skip, x), x], dim=1))
        return self.head(x)


def _unet(*, num_classes: int = 2, in_channels: int = 3, width: float = 1.0, padded: bool = False) -> UNet:
    return UNet(num_classes=num_classes, in_channels=in_channels, width=width, padded=padded)


register_model(
    ModelSpec(
        name="unet",
        task="segmentation",
        builder=_unet,
        input_size=(572, 572),
        num_classes=2,
        preprocessing=Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_range=(0.0, 1.0)),
        paper="Ronneberger, Fischer & Brox 2015, U-Net: convolutional networks for biomedical image "
        "segmentation (arXiv 1505.04597)",
        description="U-Net as in the paper: unpadded 3x3 convs 64..1024, 2x2 up-convs, crop + concat, 2 classes. "
        "The output is smaller than the input: 572x572 -> 388x388 (output side = input side - 184); input sides "
        "must be 16k+60 >= 188 (they step by 16, hence size_multiple 16). padded=True gives a same-size output "
        "for sides that are multiples of 16.",
        size_multiple=16,
        size_rule=_size_rule,
    )
)
