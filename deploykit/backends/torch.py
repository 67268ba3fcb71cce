"""PyTorch eager runner: the reference every other backend is compared with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from deploykit.backends.base import Availability, Runner, TensorSpec


def availability() -> Availability:
    """PyTorch is a dependency: always ready (the reference every other backend is compared with)."""
    return Availability("ready", str(torch.__version__))


def outputs_as_tuple(result: object) -> tuple[torch.Tensor, ...]:
    """A model's forward result as a tuple of tensors (a tensor, a tuple/list, or a dict in key order)."""
    if isinstance(result, torch.Tensor):
        return (result,)
    if isinstance(result, Mapping):
        return tuple(result.values())
    if isinstance(result, Sequence):
        return tuple(result)
    raise TypeError(f"model returned {type(result).__name__}; expected a tensor, tuple or dict of tensors")


class TorchRunner(Runner):
    backend = "torch"

    def __init__(
        self,
        module: nn.Module,
        *,
        input_names: Sequence[str] = ("input",),
        output_names: Sequence[str] = ("output",),
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.module = module.eval()
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.threads = threads

    def _open(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(name, ("batch", 3, "height", "width"), "float32") for name in self.input_names]

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec(name, ("batch", None, "height", "width"), "float32") for name in self.output_names]

    @torch.inference_mode()
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self.input_names]
        outputs = outputs_as_tuple(self.module(*args))
        return {name: out.detach().float().numpy() for name, out in zip(self.output_names, outputs, strict=True)}
