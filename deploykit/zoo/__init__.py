"""The model zoo: seed architectures registered by name (importing the package registers them all)."""

from deploykit.zoo import models  # noqa: F401  (registers every architecture)
from deploykit.zoo._registry import (
    ModelSpec,
    Preprocessing,
    aliases,
    get_model_spec,
    list_models,
    nearest_side,
    register_model,
)

__all__ = ["ModelSpec", "Preprocessing", "aliases", "get_model_spec", "list_models", "nearest_side",
           "register_model"]
