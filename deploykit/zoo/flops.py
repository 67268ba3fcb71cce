"""Parameter and multiply-add counts, by forward hooks on the layers that do the arithmetic.

Multiply-adds (MAdds) count one multiply-accumulate per weight use, as the papers do: convolutions
(including transposed and grouped), linear layers. Normalisation, activations, pooling and resizing are
left out, again as in the papers' figures.

Two conventions for atrous (dilated) convolutions:
- "dense" (default): every output position once, what a dense dilated conv (PyTorch, cuDNN, TensorRT) computes.
- "tf": what TensorFlow computes, and so what TF-measured paper figures (DeepLab's) count. TF runs an atrous conv
  of rate r as SpaceToBatchND -> ordinary conv -> BatchToSpaceND, padding each spatial side to a multiple of r
  first, so the conv runs over ceil(n / r) * r positions per side of an n-wide output (33 -> 36 at rate 6, 12
  or 18) and the extra ones are cropped away. Only stride-1 convs with dilation > 1 are affected (TF has no
  strided atrous conv); depthwise atrous convs too (TF's depthwise conv takes the same path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ATROUS_CONVENTIONS = ("dense", "tf")


@dataclass(frozen=True)
class Complexity:
    params: int
    madds: int
    input_shape: tuple[int, ...]
    atrous: str = "dense"  # the counting convention, see the module docstring

    @property
    def gflops(self) -> float:
        """Floating-point operations in G (2 per multiply-add)."""
        return 2 * self.madds / 1e9


def _conv_positions(module: nn.Conv2d, output: torch.Tensor, atrous: str) -> int:
    """Output positions (N*H*W) the conv computes under the `atrous` convention."""
    n, _, height, width = output.shape
    rate_h, rate_w = module.dilation
    if atrous == "tf" and module.stride == (1, 1) and (rate_h > 1 or rate_w > 1):
        height, width = math.ceil(height / rate_h) * rate_h, math.ceil(width / rate_w) * rate_w
    return int(n * height * width)


def _conv_madds(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor, atrous: str) -> int:
    assert isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
    kernel = module.kernel_size[0] * module.kernel_size[1]
    per_position = kernel * (module.in_channels // module.groups)
    if isinstance(module, nn.ConvTranspose2d):
        # every input position scatters into kernel positions for each output channel
        positions = inputs[0].numel() // inputs[0].shape[1]
        return positions * kernel * module.in_channels * (module.out_channels // module.groups)
    return _conv_positions(module, output, atrous) * module.out_channels * per_position


def count_complexity(model: nn.Module, input_shape: tuple[int, int, int, int], *,
                     atrous: str = "dense") -> Complexity:
    """Parameters and multiply-adds of one forward pass at `input_shape` (N, C, H, W).

    atrous: "dense" or "tf", how dilated convs are counted (module docstring). The forward runs on the
    model's device: build the model under `torch.device("meta")` to count a full-size model in milliseconds
    without computing anything (see `complexity_at`).
    """
    if atrous not in ATROUS_CONVENTIONS:
        raise ValueError(f"atrous must be one of {', '.join(ATROUS_CONVENTIONS)}, got {atrous!r}")
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            total += _conv_madds(module, inputs, output, atrous)
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            model(torch.zeros(input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return Complexity(params=params, madds=total, input_shape=tuple(input_shape), atrous=atrous)


def complexity_at(builder: Callable[[], nn.Module], input_shape: tuple[int, int, int, int], *,
                  atrous: str = "dense") -> Complexity:
    """Count a model without allocating or computing it: built and run on the meta device."""
    with torch.device("meta"):
        model = builder()
    return count_complexity(model, input_shape, atrous=atrous)
