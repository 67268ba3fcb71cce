"""The model registry: one flat table of ModelSpec by name (timm/torchvision style)."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from deploykit.errors import ConfigConflict, InputError, UnknownModel
from deploykit.types import IMAGENET, Preprocessing, Task

SizeRule = Callable[[tuple[int, int], Mapping[str, Any]], None]


def nearest_side(takes: Callable[[int], bool], side: int, mode: Literal["up", "down", "nearest"],
                 reach: int) -> int | None:
    """The positive side nearest `side` that `takes` (a size rule's verdict on a square of that side), searched
    up, down or both ways (the smaller first on a tie) within `reach` steps; None when none is that near."""
    for step in range(reach):
        candidates = {"up": (side + step,), "down": (side - step,), "nearest": (side - step, side + step)}[mode]
        for candidate in candidates:
            if candidate > 0 and takes(candidate):
                return candidate
    return None


def min_side_rule(minimum: int, why: str) -> SizeRule:
    """The size rule of a model whose height and width must be at least `minimum` pixels (`why`: what needs them)."""
    def rule(size: tuple[int, int], options: Mapping[str, Any]) -> None:
        if min(size) < minimum:
            raise InputError(f"input {size[0]}x{size[1]}: {why}; use a height and width of at least {minimum}")
    return rule


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
    # ((height, width), builder options) -> None, raising InputError naming sizes that work: for a model whose
    # graph runs on sizes the model cannot take (U-Net's ONNX crops any size; only 16k+60 tiles), so export and
    # runners refuse them in one line
    size_rule: SizeRule | None = None

    def options(self) -> dict[str, inspect.Parameter]:
        """The builder's keyword options (name -> parameter), as documented by its signature."""
        params = inspect.signature(self.builder).parameters
        return {n: p for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    def check_size(self, height: int, width: int, options: Mapping[str, Any]) -> None:
        """InputError naming sizes that work when the model built with `options` cannot take height x width."""
        if self.size_rule is not None:
            self.size_rule((height, width), {**self.defaults, **options})

    def build(self, **overrides: Any) -> nn.Module:
        """Build the model with this name's defaults plus `overrides`, rejecting unknown options."""
        known = self.options()
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigConflict(
                f"model {self.name!r} has no option {', '.join(unknown)}; "
                f"its options are: {', '.join(sorted(known)) or '(none)'}"
            )
        typed = {name: _typed_like(name, value, self.defaults.get(name, known[name].default))
                 for name, value in overrides.items()}
        for name in COUNTS:
            if name in typed and typed[name] < 1:
                default = self.defaults.get(name, known[name].default)
                raise ConfigConflict(f"--set {name} takes a positive integer (default {default}), got {typed[name]!r}")
        kwargs = {**self.defaults, **typed}
        try:
            return self.builder(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigConflict(f"model {self.name!r} rejected options {kwargs}: {exc}") from exc


# Options that count channels, at least 1: torch fails deep inside a builder given 0 or fewer (a negative
# dimension, a division by zero), which read as a bug in deploykit.
COUNTS = ("num_classes", "in_channels")


def _typed_like(name: str, value: Any, default: Any) -> Any:
    """An option's value in the type of its default (what `deploykit models NAME` shows): --set parses text, so
    decoder=maybe, num_classes=2.5 or width_multiplier=nan reach no builder. Options without a default of a
    plain type (None, tuples) pass as given."""
    if isinstance(default, bool):
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise ConfigConflict(f"--set {name} takes true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigConflict(f"--set {name} takes an integer (default {default}), got {value!r}")
    if isinstance(default, float):
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
        if number is None and isinstance(value, str):
            try:
                number = float(value)  # nan and inf, which --set's literal parsing leaves as text
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise ConfigConflict(f"--set {name} takes a finite number (default {default}), got {value!r}")
        return float(number)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigConflict(f"--set {name} takes text (default {default!r}), got {value!r}")
    return value


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
