"""Parameter and multiply-add counts, by forward hooks on the layers that do the arithmetic.

Multiply-adds (MAdds) count one multiply-accumulate per weight use, as the papers do: convolutions
(including transposed and grouped), linear layers. Normalisation, activations, pooling and resizing are
left out, again as in the papers' figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Complexity:
    params: int
    madds: int
    input_shape: tuple[int, ...]

    @property
    def gflops(self) -> float:
        """Floating-point operations in G (2 per multiply-add)."""
        return 2 * self.madds / 1e9


def _conv_madds(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    assert isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
    kernel = module.kernel_size[0] * module.kernel_size[1]
    per_position = kernel * (module.in_channels // module.groups)
    if isinstance(module, nn.ConvTranspose2d):
        # every input position scatters into kernel positions for each output channel
        positions = inputs[0].numel() // inputs[0].shape[1]
        return positions * kernel * module.in_channels * (module.out_channels // module.groups)
    return output.numel() * per_position


def count_complexity(model: nn.Module, input_shape: tuple[int, int, int, int]) -> Complexity:
    """Parameters and multiply-adds of one forward pass at `input_shape` (N, C, H, W).

    The forward runs on the model's device: build the model under `torch.device("meta")` to count a
    full-size model in milliseconds without computing anything (see `complexity_at`).
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            total += _conv_madds(module, inputs, output)
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
    return Complexity(params=params, madds=total, input_shape=tuple(input_shape))


def complexity_at(builder: Callable[[], nn.Module], input_shape: tuple[int, int, int, int]) -> Complexity:
    """Count a model without allocating or computing it: built and run on the meta device."""
    with torch.device("meta"):
        model = builder()
    return count_complexity(model, input_shape)
