"""Triton Python-backend models (`model.py` files) that `package --triton` and `serve` copy into a model
repository; they run inside Triton's Python backend stub, not in deploykit's process."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any


def triton_settings(args: Mapping[str, str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """What a model's `initialize(args)` starts from: Triton's `triton_python_backend_utils` module (which only
    the stub provides), the model's config, and deploykit's settings (its `deploykit` parameter, JSON)."""
    backend = importlib.import_module("triton_python_backend_utils")
    config: dict[str, Any] = json.loads(args["model_config"])
    return backend, config, json.loads(config["parameters"]["deploykit"]["string_value"])
