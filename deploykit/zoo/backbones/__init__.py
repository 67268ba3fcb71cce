"""Backbones for the zoo's segmentation heads: ResNet, modified aligned Xception-65, MobileNetV2.

Each returns (high-level features, low-level features) so an encoder-decoder head (DeepLabv3+) can use both,
and reaches output stride 16 or 8 by replacing strides with dilation (atrous convolution).
"""

from __future__ import annotations

from deploykit.zoo.backbones.base import COMPAT_CHOICES, Backbone, check_output_stride
from deploykit.zoo.backbones.mobilenetv2 import MobileNetV2
from deploykit.zoo.backbones.resnet import ResNet
from deploykit.zoo.backbones.xception import Xception65


def build_backbone(name: str, *, output_stride: int, width_multiplier: float, compat: str) -> Backbone:
    """The backbone `name` (resnet50, resnet101, xception65, mobilenetv2) at `output_stride`."""
    check_output_stride(output_stride)
    if compat not in COMPAT_CHOICES:
        raise ValueError(f"compat must be one of {', '.join(COMPAT_CHOICES)}, got {compat!r}")
    if not width_multiplier > 0:
        raise ValueError(f"width_multiplier must be positive, got {width_multiplier!r}")
    if name in ("resnet50", "resnet101"):
        blocks = (3, 4, 6, 3) if name == "resnet50" else (3, 4, 23, 3)
        return ResNet(blocks, output_stride=output_stride, width_multiplier=width_multiplier, compat=compat)
    if name == "xception65":
        return Xception65(output_stride=output_stride, width_multiplier=width_multiplier, compat=compat)
    if name == "mobilenetv2":
        return MobileNetV2(output_stride=output_stride, width_multiplier=width_multiplier, compat=compat)
    raise ValueError(f"unknown backbone {name!r}")
