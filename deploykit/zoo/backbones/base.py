"""What every backbone shares: the Backbone interface, narrow-variant channel scaling, the checks."""

from __future__ import annotations

import torch
from torch import nn

COMPAT_CHOICES: tuple[str, ...] = ("paper", "vainf", "jfzhang95")


class Backbone(nn.Module):
    """A feature extractor: forward(x) -> (features at output_stride, features at stride 4)."""

    out_channels: int
    low_level_channels: int

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


def scaled(channels: int, multiplier: float) -> int:
    """`channels` scaled for narrow test variants; never below 4 (BN needs a few channels to mean anything)."""
    return channels if multiplier == 1.0 else max(4, round(channels * multiplier))


def check_output_stride(output_stride: int) -> None:
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 16 or 8, got {output_stride!r}")
