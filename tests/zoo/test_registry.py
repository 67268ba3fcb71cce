"""Tests generated from the registry: a model is tested the moment it is registered (timm style).

Per-architecture files test what is particular to each paper; this file holds what every model owes:
a complete spec, a working `deploykit models NAME`, and a tiny variant that builds, runs, exports with
dynamic shapes and matches PyTorch in ONNX Runtime on two shapes.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.errors import InputError
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.zoo import aliases, get_model_spec, list_models
from deploykit.zoo.checkpoints import _FORMATS
from deploykit.zoo.sources import load_model
from tests.fixtures.tiny import TINY

NAMES = list_models()


def test_the_seed_architectures_are_registered() -> None:
    expected = {"deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_xception65",
                "deeplabv3plus_mobilenetv2", "msinet", "dilatednet_frontend", "dilatednet_context_basic",
                "dilatednet_context_large", "deconvnet", "fcn32s", "fcn16s", "fcn8s", "unet"}
    assert expected <= set(NAMES)
    assert aliases()["deeplabv3plus"] == "deeplabv3plus_resnet50"


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_complete(name: str) -> None:
    spec = get_model_spec(name)
    assert spec.task in ("segmentation", "saliency")
    assert spec.paper and spec.description
    assert spec.num_classes >= 1 and (spec.task != "saliency" or spec.num_classes == 1)
    h, w = spec.input_size
    # U-Net's valid sides are 16k+60, so its size_multiple is the step between valid sizes, not a divisor.
    assert (h % spec.size_multiple, w % spec.size_multiple) == (0, 0) or spec.name == "unet"
    assert all(fmt in _FORMATS for fmt in spec.checkpoint_formats if fmt != "state_dict")
    params = inspect.signature(spec.builder).parameters
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values()), "builders take keyword-only options"
    assert set(TINY[spec.name].options) <= set(params)
    spec.check_size(h, w, {})  # a size rule takes the model's own size


@pytest.mark.parametrize("name", NAMES)
def test_models_command_shows_the_spec(name: str) -> None:
    result = CliRunner().invoke(cli, ["models", name, "--json"])
    assert result.exit_code == 0, result.output
    assert f'"name": "{name}"' in result.output and '"madds"' in result.output


@pytest.mark.parametrize("name", NAMES)
def test_tiny_variant_exports_and_matches_onnx_runtime(name: str, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    loaded = load_model(name, options=dict(TINY[spec.name].options))
    h, w = TINY[spec.name].input_size
    with torch.inference_mode():
        out = loaded.module(torch.randn(1, 3, h, w))
    assert torch.isfinite(out).all()
    result = onnx_from_torch(loaded, tmp_path / "m.onnx", input_shape=(1, 3, h, w), simplify=False)
    assert result.passed, [(c.input_shape, {k: v.max_abs for k, v in c.outputs.items()}) for c in result.checks]
    assert len({c.input_shape for c in result.checks}) == 2 and (tmp_path / "m.onnx").is_file()


RULED = [name for name in NAMES if get_model_spec(name).size_rule is not None]


@pytest.mark.parametrize("name", RULED)
@pytest.mark.parametrize("size", [(1, 1), (1, 8), (7, 9), (8, 9), (16, 16), (188, 189)])
def test_a_size_rule_refuses_what_the_forward_refuses(name: str, size: tuple[int, int]) -> None:
    """A size rule is what runners of the exported graph refuse by (ONNX Runtime answers where PyTorch raises:
    MSI-Net's graph gives an 8x8 map for a 2x2 input, U-Net's crops any size), so below its model's smallest size
    it must refuse exactly what the eager forward refuses."""
    spec = get_model_spec(name)
    options = dict(TINY[name].options)
    module = spec.build(**options).eval()
    try:
        spec.check_size(*size, options)
        ruled = True
    except InputError:
        ruled = False
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 3, *size))
        ran = True
    except (InputError, RuntimeError, ZeroDivisionError):
        ran = False
    assert ruled == ran
