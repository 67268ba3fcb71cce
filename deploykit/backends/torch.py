"""PyTorch eager runner: the reference every other backend is compared with."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from deploykit.backends.base import Availability
from deploykit.errors import UserCodeError
from deploykit.runner import Runner, TensorSpec


def availability() -> Availability:
    """PyTorch is a dependency: always ready (the reference every other backend is compared with)."""
    return Availability("ready", str(torch.__version__))


def named_outputs(result: object) -> dict[str, torch.Tensor]:
    """A forward result's tensors by name. A tensor is "output"; a tuple/list "output_0", "output_1", ...; a
    dict (transformers' ModelOutput is one) or a dataclass by key or field, None values left out (ModelOutput
    omits them too); nested tuples, lists and dicts are flattened as "<name>_<index or key>"."""
    if isinstance(result, torch.Tensor):
        return {"output": result}
    found: dict[str, torch.Tensor] = {}

    def add(name: str, value: object) -> None:
        items: list[tuple[str, object]]
        if value is None:
            return
        if isinstance(value, torch.Tensor):
            found[name] = value
            return
        if isinstance(value, Mapping):
            items = [(str(k), v) for k, v in value.items()]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
        elif isinstance(value, (tuple, list)):
            items = [(str(i), v) for i, v in enumerate(value)]
        else:
            raise TypeError(f"model output {name or 'value'} is a {type(value).__name__}; expected tensors in a "
                            "tensor, tuple, list, dict or dataclass")
        for key, item in items:
            add(f"{name}_{key}" if name else key, item)

    add("output" if isinstance(result, (tuple, list)) else "", result)
    if not found:
        raise TypeError(f"model returned {type(result).__name__} holding no tensor")
    return found


def outputs_as_tuple(result: object) -> tuple[torch.Tensor, ...]:
    """A model's forward result as a tuple of tensors, in the order of `named_outputs`."""
    return tuple(named_outputs(result).values())


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

    def forward(self, args: Sequence[torch.Tensor]) -> Any:
        """The module's forward; a user model's own exception becomes a UserCodeError (exit 2, its file and
        line), since the traceback is the user's to fix; a zoo model's stays a deploykit bug."""
        try:
            return self.module(*args)
        except Exception as exc:
            if type(self.module).__module__.split(".")[0] == "deploykit":
                raise

            shape = "x".join(str(d) for d in args[0].shape) if args else "?"
            raise UserCodeError.from_exception(f"your model's forward (on input {shape})", exc) from exc

    @torch.inference_mode()
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self.input_names]
        outputs = outputs_as_tuple(self.forward(args))
        return {name: out.detach().float().numpy() for name, out in zip(self.output_names, outputs, strict=True)}
