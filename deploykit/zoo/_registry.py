"""The model registry: one flat table of ModelSpec by name (timm/torchvision style)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from deploykit.errors import ConfigConflict, UnknownModel
from deploykit.types import IMAGENET, Preprocessing, Task


@dataclass(frozen=True)
class ModelSpec:
    """Everything deploykit needs to know about a model besides its weights."""

    name: str
    task: Task
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int]  # default (height, width)
    num_classes: int  # 1 for saliency
    preprocessing: Preprocessing = IMAGENET
    paper: str = ""
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)  # builder kwargs this name fixes
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)
    checkpoint_formats: tuple[str, ...] = ("state_dict",)
    size_multiple: int = 1  # height and width must be multiples of this
    exporter: Literal["torchscript", "dynamo"] = "torchscript"

    def options(self) -> dict[str, inspect.Parameter]:
        """The builder's keyword options (name -> parameter), as documented by its signature."""
        params = inspect.signature(self.builder).parameters
        return {n: p for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    def build(self, **overrides: Any) -> nn.Module:
        """Build the model with this name's defaults plus `overrides`, rejecting unknown options."""
        known = self.options()
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigConflict(
                f"model {self.name!r} has no option {', '.join(unknown)}; "
                f"its options are: {', '.join(sorted(known)) or '(none)'}"
            )
        kwargs = {**self.defaults, **overrides}
        try:
            return self.builder(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigConflict(f"model {self.name!r} rejected options {kwargs}: {exc}") from exc


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def register_model(spec: ModelSpec, *, aliases: tuple[str, ...] = ()) -> ModelSpec:
    """Add `spec` under its name (and aliases). Registering a name twice is a bug and fails."""
    for name in (spec.name, *aliases):
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    for alias in aliases:
        _ALIASES[alias] = spec.name
    return spec


def get_model_spec(name: str) -> ModelSpec:
    canonical = _ALIASES.get(name, name)
    if canonical not in _REGISTRY:
        names = list_models()
        close = [n for n in names if name.lower() in n] or difflib.get_close_matches(name.lower(), names, n=4)
        hint = f" Did you mean {', '.join(close[:4])}?" if close else ""
        raise UnknownModel(
            f"unknown model {name!r}.{hint} Run `deploykit models` for the list, "
            "or give a user model as package.module:factory"
        )
    return _REGISTRY[canonical]


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def aliases() -> dict[str, str]:
    return dict(_ALIASES)
