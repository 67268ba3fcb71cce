"""U-Net: the paper's 572 -> 388 geometry, valid sizes, the padded option, counts, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from deploykit.errors import InputError
from deploykit.evaluate import session_from_onnx
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.images import preprocess
from deploykit.zoo import get_model_spec
from deploykit.zoo.flops import count_complexity
from deploykit.zoo.sources import load_model
from deploykit.zoo.unet import UNet, _center_crop, valid_unet_output
from tests.fixtures.tiny import TINY

WIDTH = 0.0625


def test_paper_tile_572_gives_388() -> None:
    model = UNet(width=WIDTH).eval()
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 572, 572)).shape == (1, 2, 388, 388)
    assert valid_unet_output(572) == 388 and valid_unet_output(188) == 4


def test_layout_is_figure_1() -> None:
    model = UNet()
    assert [block[0].out_channels for block in model.down] == [64, 128, 256, 512, 1024]
    assert all(conv.padding == (0, 0) for conv in model.modules() if isinstance(conv, torch.nn.Conv2d))
    assert [(up.kernel_size, up.stride, up.out_channels) for up in model.upconv] == [
        ((2, 2), (2, 2), 512), ((2, 2), (2, 2), 256), ((2, 2), (2, 2), 128), ((2, 2), (2, 2), 64)]
    assert [block[0].in_channels for block in model.up] == [1024, 512, 256, 128]  # crop + concat doubles them
    assert (model.head.kernel_size, model.head.out_channels) == ((1, 1), 2)


@pytest.mark.parametrize(("size", "nearest"), [(570, "556 or 572"), (100, "188"), (205, "204 or 220")])
def test_sizes_that_do_not_tile_are_refused(size: int, nearest: str) -> None:
    with pytest.raises(ValueError, match=f"use {nearest}"):
        valid_unet_output(size)
    with pytest.raises(InputError, match=f"input {size}x204"):
        UNet(width=WIDTH).eval()(torch.zeros(1, 3, size, 204))


def test_padded_option_keeps_the_size() -> None:
    model = UNet(width=WIDTH, padded=True).eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, 64, 80)).shape == (2, 2, 64, 80)
    with pytest.raises(InputError, match="multiples of 16"):
        model(torch.zeros(1, 3, 64, 72))


@pytest.mark.parametrize(("options", "size", "fits"), [
    ({}, (189, 188), False), ({}, (204, 220), True), ({"padded": True}, (65, 64), False),
    ({"padded": True}, (64, 80), True), ({"padded": True, "width": 0.5}, (8, 16), False)])
def test_the_spec_rule_is_the_forwards(options: dict[str, object], size: tuple[int, int], fits: bool) -> None:
    """The exported graph crops any size (ONNX Runtime answers at 189x188), so runners refuse by the spec's
    size_rule: it must refuse exactly what the eager forward refuses, under the options the metadata records."""
    spec = get_model_spec("unet")
    model = spec.build(**{"width": WIDTH, **options}).eval()
    refused = []
    for check in (lambda: spec.check_size(*size, options), lambda: model(torch.zeros(1, 3, *size))):
        try:
            with torch.inference_mode():
                check()
        except InputError as exc:
            refused.append(str(exc))
    assert refused == ([] if fits else [refused[0]] * 2)


def test_skip_connections_are_centre_cropped() -> None:
    # Figure 1: 64x64 contracting maps are cropped to the 56x56 of the expanding path, 4 pixels on each side.
    skip = torch.arange(64.0 * 64).reshape(1, 1, 64, 64)
    cropped = _center_crop(skip, torch.empty(1, 1, 56, 56))
    assert cropped.shape == (1, 1, 56, 56)
    assert cropped[0, 0, 0, 0] == skip[0, 0, 4, 4] and cropped[0, 0, -1, -1] == skip[0, 0, 59, 59]


def _conv_params(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def paper_parameters(in_channels: int) -> int:
    channels = [64, 128, 256, 512, 1024]
    total, cin = 0, in_channels
    for ch in channels:
        total += _conv_params(cin, ch, 3) + _conv_params(ch, ch, 3)
        cin = ch
    for ch in reversed(channels[:-1]):
        total += _conv_params(2 * ch, ch, 2) + _conv_params(2 * ch, ch, 3) + _conv_params(ch, ch, 3)
    return total + _conv_params(64, 2, 1)


def test_parameter_count_is_the_paper() -> None:
    with torch.device("meta"):  # shapes only
        grey = sum(p.numel() for p in UNet(in_channels=1).parameters())
        rgb = sum(p.numel() for p in UNet().parameters())
    assert grey == paper_parameters(1) == 31_030_658
    assert rgb == paper_parameters(3)
    assert rgb == pytest.approx(31.03e6, rel=0.001)


def test_multiply_adds_at_572() -> None:
    with torch.device("meta"):  # shapes only, no arithmetic
        assert count_complexity(UNet(), (1, 3, 572, 572)).madds == pytest.approx(150e9, rel=0.02)


@pytest.mark.parametrize(("options", "shape", "photo_size"), [
    ({}, None, (220, 236)),
    ({"padded": True}, (1, 3, 64, 80), (96, 48)),
])
def test_export_matches_onnx_runtime_on_two_shapes(options: dict[str, bool], shape: tuple[int, ...] | None,
                                                    photo_size: tuple[int, int], tmp_path: Path) -> None:
    spec = get_model_spec("unet")
    loaded = load_model("unet", options={**TINY[spec.name].options, **options})
    path = tmp_path / "unet.onnx"
    result = onnx_from_torch(loaded, path, input_shape=shape or (1, 3, *TINY[spec.name].input_size), simplify=False)
    assert result.passed and result.dynamic and len(result.checks) == 2
    photo = preprocess(data.camera(), spec.preprocessing, photo_size)
    (got,) = session_from_onnx(path).run(None, {"input": photo})
    with torch.inference_mode():
        expected = loaded.module(torch.from_numpy(photo)).numpy()
    out_size = photo_size if options else (photo_size[0] - 184, photo_size[1] - 184)
    assert got.shape == (1, 2, *out_size)
    assert np.abs(got - expected).max() <= 1e-4 * (1 + np.abs(expected).max())  # export's default tolerance


@pytest.mark.slow
def test_full_size_export_at_572(tmp_path: Path) -> None:
    result = onnx_from_torch(load_model("unet"), tmp_path / "unet.onnx", simplify=False)
    assert result.passed and result.input_shape == (1, 3, 572, 572)
    assert [c.input_shape for c in result.checks] == [(1, 3, 572, 572), (2, 3, 588, 604)]
