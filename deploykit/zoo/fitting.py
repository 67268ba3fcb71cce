"""Which other zoo models a checkpoint fits, for the message when it does not fit the one asked for: a
VainF MobileNetV2 checkpoint given to deeplabv3plus_resnet50, jfzhang95's ResNet-101 one given to ResNet-50.

Each model is built on the meta device (shapes only, no memory) with its random initialisation skipped: torch's
meta normal_ imports torch._dynamo on first use, which took 45 s on 2 busy cores; all 13 models then build in a
few seconds, and only when a checkpoint has already failed to load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from deploykit.errors import DeployKitError
from deploykit.zoo._registry import ModelSpec, get_model_spec, list_models
from deploykit.zoo.checkpoints import align_keys, convert_checkpoint

_RANDOM_INIT = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_})


class _NoRandomInit(TorchFunctionMode):
    """Random in-place initialisation is a no-op (there are no values on the meta device to fill)."""

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: Mapping[str, Any] | None = None) -> Any:
        if func in _RANDOM_INIT:
            return args[0]
        return func(*args, **(kwargs or {}))


def _shapes(spec: ModelSpec, options: Mapping[str, Any]) -> dict[str, torch.Size] | None:
    """The model's state_dict shapes with these options, or None when it does not build with them."""
    try:
        with torch.device("meta"), _NoRandomInit():
            module = spec.build(**options)
    except Exception:  # options this model refuses (another backbone's output_stride): it is not the one
        return None
    return {k: v.shape for k, v in module.state_dict().items()}


def _fit(obj: Any, spec: ModelSpec, options: Mapping[str, Any]) -> int | None:
    """How many of the model's tensors the checkpoint leaves uncovered (0: it fits exactly), or None when it
    holds a tensor the model has not, or of another shape."""
    try:
        converted = convert_checkpoint(obj, spec.checkpoint_formats)
    except DeployKitError:
        return None
    accepted = spec.options()
    built = {k: v for k, v in {**converted.options, **options}.items() if k in accepted}
    own = _shapes(spec, built)
    if own is None:
        return None
    state, _ = align_keys(converted.state_dict, list(own))
    if not state or any(k not in own or v.shape != own[k] for k, v in state.items()):
        return None
    return sum(1 for k in own if k not in state and not k.endswith("num_batches_tracked"))


def models_fitting(obj: Any, options: Mapping[str, Any], *, besides: str) -> tuple[list[str], list[str]]:
    """The zoo models other than `besides` the loaded checkpoint `obj` fits exactly, and those it fits in part
    (backbone-only weights: --allow-partial), the fewest left uncovered first. `options` are the user's --set
    options; those a model does not take are left out."""
    fits = {name: _fit(obj, get_model_spec(name), options) for name in list_models() if name != besides}
    exact = [name for name, left in fits.items() if left == 0]
    partial = sorted((name for name, left in fits.items() if left), key=lambda name: fits[name] or 0)
    return exact, partial


def another_model(obj: Any, options: Mapping[str, Any], *, asked: str) -> str:
    """What to say when the checkpoint does not fit the zoo model `asked`: the model it is of, if any ("" if
    none, or if it fits part of `asked`, backbone weights without --allow-partial: the mismatch itself is
    then the message)."""
    if _fit(obj, get_model_spec(asked), options) is not None:
        return ""
    exact, partial = models_fitting(obj, options, besides=asked)
    if exact:
        named = " or ".join(exact[:3])
        return f"it is a checkpoint of {named}: give {exact[0]} as the model"
    if partial:
        return (f"its weights fit part of {' or '.join(partial[:3])}: give {partial[0]} as the model, with "
                "--allow-partial")
    return ""
