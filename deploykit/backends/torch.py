"""PyTorch eager runner: the reference every other backend is compared with."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from deploykit.backends.base import Availability
from deploykit.errors import a_or_an, first_line, out_of_memory, users_code
from deploykit.runner import Runner, TensorSpec, shape_refused


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
            raise TypeError(f"model output {name or 'value'} is {a_or_an(type(value).__name__)}; "
                            "expected tensors in a tensor, tuple, list, dict or dataclass")
        for key, item in items:
            add(f"{name}_{key}" if name else key, item)

    add("output" if isinstance(result, (tuple, list)) else "", result)
    if not found:
        raise TypeError(f"model returned {type(result).__name__} holding no tensor")
    return found


def module_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype a module computes in, as its user feeds it: its first floating parameter's (else
    buffer's), float32 when it has none. A `.half()` model takes float16 inputs, a `.double()` one float64."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def as_model_input(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """`x` (float32, as every runtime is fed) in the floating dtype `module` computes in."""
    return x.to(module_dtype(module)) if x.is_floating_point() else x


@dataclasses.dataclass(frozen=True)
class ForwardBytes:
    """What one forward pass held: the most bytes of module outputs alive at once (its input included), and
    how many values its outputs have."""

    peak: int
    output_values: int


def forward_bytes(module: nn.Module, x: torch.Tensor) -> ForwardBytes:
    """Run `module` on `x` once and count the bytes of every module's output while it is alive (a forward hook,
    freed with its tensor): the activations a run at this shape holds, to scale to a larger one before running
    it there. Tensors made between modules (a torch.cat in a forward) and kernels' scratch are not seen; callers
    allow for them. A hook, not a TorchDispatchMode, which would import torch._dynamo (3-10 s) for a guard."""
    live = {"now": x.untyped_storage().nbytes(), "peak": 0}
    live["peak"] = live["now"]
    seen: set[int] = {x.untyped_storage().data_ptr()}

    def freed(key: int, size: int) -> None:
        seen.discard(key)
        live["now"] -= size

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        for tensor in _tensors(output):
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size and key not in seen:  # a view or an in-place op's output is counted once
                seen.add(key)
                live["now"] += size
                live["peak"] = max(live["peak"], live["now"])
                weakref.finalize(tensor, freed, key, size)

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.inference_mode():
            result = module(as_model_input(x, module))
    finally:
        handle.remove()
    return ForwardBytes(live["peak"], sum(t.numel() for t in _tensors(result)))


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a module's output, however nested (tuples, lists, dicts, dataclasses)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def outputs_as_tuple(result: object) -> tuple[torch.Tensor, ...]:
    """A model's forward result as a tuple of tensors, in the order of `named_outputs`."""
    return tuple(named_outputs(result).values())


class TorchRunner(Runner):
    """A module in eager mode. Each call runs on copies of the feed's arrays: a forward that changes its input
    in place (`x.mul_(2)`, `F.relu(x, inplace=True)`) must not change the caller's arrays, which the other
    runtimes read next (export verification, parity, bench's round-robin); the copy costs a memcpy of the
    input (0.3 ms for 1x3x513x513), timed with the forward as an application's own tensor conversion is."""

    backend = "torch"

    def __init__(
        self,
        module: nn.Module,
        *,
        input_names: Sequence[str] = ("input",),
        output_names: Sequence[str] = ("output",),
        threads: int | None = None,
        user_code: str | None = None,
        channels: int | None = 3,
    ) -> None:
        """user_code: how errors name the module when it is the user's own code ("your model pkg.mod:make"):
        whatever its forward raises is then theirs (exit 2, their file and line). None for deploykit's own
        models, whose exceptions are deploykit's bugs. channels: the input's channel count (None: any, for a
        user's module, whose forward then says what it takes)."""
        super().__init__()
        self.channels = channels
        self.module = module.eval()
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.threads = threads
        self.user_code = user_code

    def _open(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(name, ("batch", self.channels, "height", "width"), "float32") for name in self.input_names]

    def output_specs(self) -> list[TensorSpec]:
        return [TensorSpec(name, ("batch", None, "height", "width"), "float32") for name in self.output_names]

    def names_for(self, count: int) -> tuple[str, ...]:
        """The names of a forward's `count` outputs."""
        return self.output_names

    def forward(self, args: Sequence[torch.Tensor]) -> Any:
        if self.user_code is None:
            try:
                return self.module(*args)
            except RuntimeError as exc:  # a zoo model below its smallest size (a kernel larger than its map)
                if out_of_memory(exc):
                    raise
                shapes = {name: tuple(arg.shape) for name, arg in zip(self.input_names, args, strict=True)}
                raise shape_refused(type(self.module).__name__, shapes, first_line(exc), self.sizes,
                                    eager=True) from exc
        shape = "x".join(str(d) for d in args[0].shape) if args else "?"
        with users_code(f"{self.user_code} (on input {shape})"):
            return self.module(*args)

    @torch.inference_mode()
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # copies (class docstring), in the model's own floating dtype (a `.half()` model is fed float16)
        args = [as_model_input(torch.tensor(feed[name]), self.module) for name in self.input_names]
        outputs = outputs_as_tuple(self.forward(args))
        names = self.names_for(len(outputs))
        # float outputs as float32 (what the exported graph gives for fp16/bf16 too); integer ones (a class map
        # from an argmax inside the model) keep their type, which tells a class map from scores
        return {name: (out.detach().float() if out.is_floating_point() else out.detach()).numpy()
                for name, out in zip(names, outputs, strict=True)}
