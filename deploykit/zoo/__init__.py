"""The model zoo: seed architectures registered by name."""

from deploykit.zoo._registry import (
    ModelSpec,
    Preprocessing,
    get_model_spec,
    list_models,
    register_model,
)

__all__ = ["ModelSpec", "Preprocessing", "get_model_spec", "list_models", "register_model"]
