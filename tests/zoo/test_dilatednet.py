"""DilatedNet: front-end geometry (valid convs, 186-pixel margin), context module identity init, counts, export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data

from deploykit.evaluate import session_from_onnx
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.images import preprocess
from deploykit.zoo import get_model_spec
from deploykit.zoo.dilatednet import LABEL_MARGIN, ContextModule, DilatedNet, reflect101_index
from deploykit.zoo.flops import count_complexity
from deploykit.zoo.sources import load_model
from tests.fixtures.tiny import TINY

DILATEDNET = ("dilatednet_frontend", "dilatednet_context_basic", "dilatednet_context_large")


def test_front_end_layout_is_the_reference() -> None:
    model = DilatedNet(width=0.0625)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.padding == (0, 0) for c in convs)  # valid convolutions throughout
    assert [model.conv4_3.dilation, model.conv5_1.dilation, model.fc6.dilation] == [(1, 1), (2, 2), (4, 4)]
    assert model.fc6.kernel_size == (7, 7) and model.fc7.kernel_size == (1, 1)
    assert model.context is None


def test_valid_convolutions_consume_the_186_pixel_margin() -> None:
    model = DilatedNet(width=0.0625).eval()
    with torch.inference_mode():
        # 2 * 186 + 8 unpadded pixels -> exactly one output cell: the margin is the front-end's shrinkage.
        assert model.front_end(torch.zeros(1, 3, 380, 388)).shape == (1, 21, 1, 2)
        assert model.pad_input(torch.zeros(1, 3, 16, 24)).shape == (1, 3, 16 + 2 * LABEL_MARGIN, 24 + 2 * 186)
        assert model(torch.zeros(2, 3, 16, 24)).shape == (2, 21, 16, 24)


@pytest.mark.parametrize(("size", "margin"), [(10, 4), (5, 12), (2, 7)])
def test_reflection_padding_is_reflect_101(size: int, margin: int) -> None:
    # numpy's "reflect" is OpenCV's BORDER_REFLECT_101 (edge not repeated), also for margins beyond the size.
    expected = np.pad(np.arange(size), margin, mode="reflect")
    assert reflect101_index(size, margin, torch.device("cpu")).tolist() == expected.tolist()


def test_output_is_asymmetric_x8_upsampling_of_the_logits() -> None:
    torch.manual_seed(0)
    model = DilatedNet(width=0.0625).eval()
    x = torch.randn(1, 3, 24, 32)
    with torch.inference_mode():
        logits = model.front_end(model.pad_input(x))
        out = model(x)
    # The reference's interp_map samples output pixel 8i at logit i exactly (no half-pixel shift) ...
    torch.testing.assert_close(out[:, :, ::8, ::8], logits, rtol=0, atol=1e-6)
    # ... and pixel 8i + 4 halfway between logits i and i + 1.
    torch.testing.assert_close(out[:, :, 4:-8:8, ::8], (logits[:, :, :-1] + logits[:, :, 1:]) / 2, rtol=0,
                               atol=1e-5)


@pytest.mark.parametrize("kind", ["basic", "large"])
def test_fresh_context_module_is_the_identity(kind: str) -> None:
    module = ContextModule(21, kind).eval()  # type: ignore[arg-type]
    x = torch.randn(2, 21, 9, 11, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = module(x)
    torch.testing.assert_close(out, torch.relu(x), rtol=1e-6, atol=1e-6)
    assert (out - x).abs().max() > 0.5  # negative inputs are clipped by the first ReLU: not a pass-through


def test_context_module_channels_are_table_1() -> None:
    large = ContextModule(21, "large")
    widths = [m.out_channels for m in large.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths == [42, 42, 84, 168, 336, 672, 672, 21]
    dilations = [m.dilation[0] for m in large.modules() if isinstance(m, torch.nn.Conv2d)]
    assert dilations == [1, 1, 2, 4, 8, 16, 1, 1]
    basic = ContextModule(21, "basic")
    assert {m.out_channels for m in basic.modules() if isinstance(m, torch.nn.Conv2d)} == {21}


def count_parameters(build: Callable[[], torch.nn.Module]) -> int:
    with torch.device("meta"):  # shapes only: instant even for 134 M parameters
        return sum(p.numel() for p in build().parameters())


def test_parameter_counts() -> None:
    front = count_parameters(DilatedNet)
    assert front == pytest.approx(134.35e6, rel=0.001)  # VGG16 convs + fc6/fc7 + 1x1 to 21 classes
    assert count_parameters(lambda: ContextModule(21, "large")) == pytest.approx(6.8e6, rel=0.01)
    assert count_parameters(lambda: ContextModule(21, "basic")) == 7 * (21 * 21 * 9 + 21) + 21 * 22
    assert count_parameters(lambda: DilatedNet(context="large")) == front + count_parameters(
        lambda: ContextModule(21, "large"))


# The front-end's layers at a 900x900 padded input (the reference deploy net): (output side, k, dilation, cin, cout).
FRONT_END_900 = [
    (898, 3, 1, 3, 64), (896, 3, 1, 64, 64), (446, 3, 1, 64, 128), (444, 3, 1, 128, 128),
    (220, 3, 1, 128, 256), (218, 3, 1, 256, 256), (216, 3, 1, 256, 256),
    (106, 3, 1, 256, 512), (104, 3, 1, 512, 512), (102, 3, 1, 512, 512),
    (98, 3, 2, 512, 512), (94, 3, 2, 512, 512), (90, 3, 2, 512, 512),
    (66, 7, 4, 512, 4096), (66, 1, 1, 4096, 4096), (66, 1, 1, 4096, 21),
]


def test_multiply_adds_at_the_reference_deploy_size() -> None:
    expected = sum(side * side * k * k * cin * cout for side, k, _, cin, cout in FRONT_END_900)
    with torch.device("meta"):  # shapes only, no arithmetic
        complexity = count_complexity(DilatedNet(), (1, 3, 528, 528))  # 528 + 2 * 186 = 900
    assert complexity.madds == pytest.approx(expected, rel=0.02)


def _photo(size: tuple[int, int]) -> np.ndarray:
    return preprocess(data.astronaut(), get_model_spec("dilatednet_frontend").preprocessing, size)


@pytest.mark.parametrize("name", DILATEDNET)
def test_export_matches_onnx_runtime_on_two_shapes(name: str, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    loaded = load_model(name, options=dict(TINY[spec.name].options))
    path = tmp_path / f"{name}.onnx"
    result = onnx_from_torch(loaded, path, input_shape=(1, 3, *TINY[spec.name].input_size), simplify=False)
    assert result.passed and result.dynamic and len(result.checks) == 2
    assert all(c.outputs["output"].max_abs <= 1e-4 for c in result.checks)
    photo = _photo((48, 64))
    (got,) = session_from_onnx(path).run(None, {"input": photo})
    with torch.inference_mode():
        expected = loaded.module(torch.from_numpy(photo)).numpy()
    assert got.shape == expected.shape == (1, TINY[spec.name].options.get("num_classes", 21), 48, 64)
    assert np.abs(got - expected).max() <= 1e-4 * (1 + np.abs(expected).max())  # export's default tolerance


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dilatednet_frontend", "dilatednet_context_large"])
def test_full_width_export(name: str, tmp_path: Path) -> None:
    # Full width, a smaller image than the 528x528 default: the padded input is already 504x504.
    result = onnx_from_torch(load_model(name), tmp_path / f"{name}.onnx", input_shape=(1, 3, 132, 132),
                             simplify=False)
    assert result.passed
