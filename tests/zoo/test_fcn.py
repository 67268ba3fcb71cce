"""FCN-32s/16s/8s: crops derived from the layer geometry, fixed bilinear upsampling, counts, checkpoints, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from deploykit.errors import CheckpointError
from deploykit.evaluate import session_from_onnx
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.images import preprocess
from deploykit.zoo import get_model_spec
from deploykit.zoo.backbones.vgg import VGG16_BLOCKS
from deploykit.zoo.checkpoints import convert_checkpoint, load_state_dict_strict
from deploykit.zoo.fcn import CROP_OUTPUT, CROP_POOL3, CROP_POOL4, FCN, bilinear_kernel
from deploykit.zoo.flops import count_complexity
from deploykit.zoo.sources import load_model
from tests.fixtures.tiny import TINY
from tests.zoo.test_msinet import torchvision_vgg16_state

FCNS = ("fcn32s", "fcn16s", "fcn8s")
Affine = tuple[float, float]  # input coordinate = scale * feature coordinate + offset


def _through_conv(at: Affine, conv: nn.Conv2d) -> Affine:
    scale, offset = at
    return scale, offset + scale * ((conv.kernel_size[0] - 1) * conv.dilation[0] / 2 - conv.padding[0])


def _through_pool(at: Affine) -> Affine:  # 2x2 stride 2: output i covers inputs 2i, 2i + 1
    return 2 * at[0], at[1] + at[0] * 0.5


def _through_upsampling(at: Affine, deconv: nn.ConvTranspose2d) -> Affine:  # output j = s * i + (k - 1) / 2
    stride, kernel = deconv.stride[0], deconv.kernel_size[0]
    return at[0] / stride, at[1] - at[0] * (kernel - 1) / 2 / stride


def _crop(at: Affine, offset: int) -> Affine:
    return at[0], at[1] + at[0] * offset


def geometry(model: FCN) -> dict[str, Affine]:
    """Where each feature map's pixel centres sit in the input image, from the layers' kernels, pads, strides."""
    at: Affine = (1.0, 0.0)
    pools = {}
    for block, names in enumerate(VGG16_BLOCKS):
        for name in names:
            at = _through_conv(at, getattr(model, name))
        at = _through_pool(at)
        pools[f"pool{block + 1}"] = at
    return {**pools, "score_fr": _through_conv(_through_conv(at, model.fc6), model.fc7)}


def test_reference_crops_align_every_path_with_the_input() -> None:
    geo = geometry(FCN(stride=8, width=0.0625))
    fcn32 = FCN(stride=32, width=0.0625)
    assert _crop(_through_upsampling(geo["score_fr"], fcn32.upscore), CROP_OUTPUT[32]) == (1.0, 0.0)
    fcn16 = FCN(stride=16, width=0.0625)
    up2 = _through_upsampling(geo["score_fr"], fcn16.upscore2)
    assert _crop(geo["pool4"], CROP_POOL4) == up2  # the pool4 skip lands on the upsampled fc7 scores
    assert _crop(_through_upsampling(up2, fcn16.upscore16), CROP_OUTPUT[16]) == (1.0, 0.0)
    fcn8 = FCN(stride=8, width=0.0625)
    up4 = _through_upsampling(up2, fcn8.upscore_pool4)
    assert _crop(geo["pool3"], CROP_POOL3) == up4
    assert _crop(_through_upsampling(up4, fcn8.upscore8), CROP_OUTPUT[8]) == (1.0, 0.0)
    assert (CROP_POOL4, CROP_POOL3, CROP_OUTPUT) == (5, 9, {32: 19, 16: 27, 8: 31})  # wkentaro / Caffe


@pytest.mark.parametrize("stride", [32, 16, 8])
@pytest.mark.parametrize("size", [(1, 1), (40, 56), (97, 33)])
def test_output_has_the_input_size(stride: int, size: tuple[int, int]) -> None:
    model = FCN(stride=stride, num_classes=5, width=0.0625).eval()  # type: ignore[arg-type]
    with torch.inference_mode():
        assert model(torch.randn(1, 3, *size)).shape == (1, 5, *size)


def test_bilinear_kernel_is_caffes_filler() -> None:
    ramp = np.array([0.25, 0.75, 0.75, 0.25])  # size 4: factor 2, centre 1.5
    kernel = bilinear_kernel(3, 4)
    np.testing.assert_allclose(kernel[1, 1].numpy(), np.outer(ramp, ramp))
    assert kernel[0, 1].abs().sum() == 0  # no mixing between classes


def test_upsampling_is_fixed_and_bilinear() -> None:
    model = FCN(stride=8, num_classes=3, width=0.0625)
    fixed = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert fixed == {"upscore2.weight", "upscore_pool4.weight", "upscore8.weight"}
    with torch.inference_mode():  # a linear ramp stays a ramp (x2, offset 0.75) away from the borders
        ramp = torch.arange(8.0).expand(1, 3, 8, 8)
        up = model.upscore2(ramp)[0, 0, 4, 2:-2]
    torch.testing.assert_close(up, torch.arange(2, 16.0) / 2 - 0.75)


def count_parameters(stride: int) -> int:
    with torch.device("meta"):  # shapes only
        return sum(p.numel() for p in FCN(stride=stride).parameters())  # type: ignore[arg-type]


def test_parameter_counts() -> None:
    vgg_fc_score = 14_714_688 + 102_764_544 + 16_781_312 + 4096 * 21 + 21
    assert count_parameters(32) == vgg_fc_score + 21 * 21 * 64 * 64
    assert count_parameters(16) == vgg_fc_score + 512 * 21 + 21 + 21 * 21 * (4 * 4 + 32 * 32)
    assert count_parameters(8) == vgg_fc_score + 512 * 21 + 256 * 21 + 42 + 21 * 21 * (2 * 4 * 4 + 16 * 16)
    assert count_parameters(8) == pytest.approx(134.5e6, rel=0.001)


def test_fcn8s_multiply_adds_at_500() -> None:
    with torch.device("meta"):  # shapes only, no arithmetic
        assert count_complexity(FCN(stride=8), (1, 3, 500, 500)).madds == pytest.approx(181e9, rel=0.02)


WKENTARO_FCN8S_KEYS = {
    *(f"{layer}.{p}" for block in VGG16_BLOCKS for layer in block for p in ("weight", "bias")),
    *(f"{layer}.{p}" for layer in ("fc6", "fc7", "score_fr", "score_pool3", "score_pool4") for p in ("weight", "bias")),
    "upscore2.weight", "upscore8.weight", "upscore_pool4.weight",
}


def test_loads_wkentaro_trainer_checkpoints() -> None:
    model = FCN(stride=8, width=0.0625)
    assert set(model.state_dict()) == WKENTARO_FCN8S_KEYS
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    checkpoint = {"epoch": 3, "iteration": 1000, "arch": "FCN8s", "optim_state_dict": {}, "model_state_dict": state}
    converted = convert_checkpoint(checkpoint, get_model_spec("fcn8s").checkpoint_formats)
    assert converted.source == "wkentaro/pytorch-fcn (FCN8s)" and converted.options == {"num_classes": 21}
    at_once = convert_checkpoint({**checkpoint, "arch": "FCN8sAtOnce"}, get_model_spec("fcn8s").checkpoint_formats)
    assert at_once.options == {"num_classes": 21, "at_once": True}
    load_state_dict_strict(model, converted.state_dict, allow_partial=False, source=converted.source)
    assert torch.equal(model.score_pool3.weight, state["score_pool3.weight"])
    fcn32 = FCN(stride=32, width=0.0625)
    with pytest.raises(CheckpointError, match=r"unexpected: score_pool3\.bias"):
        load_state_dict_strict(fcn32, converted.state_dict, allow_partial=True, source=converted.source)


def test_torchvision_vgg16_classifier_becomes_fc6_fc7() -> None:
    state = torchvision_vgg16_state(width=16)
    converted = convert_checkpoint(state, get_model_spec("fcn8s").checkpoint_formats)
    assert converted.source == "torchvision vgg16"
    model = FCN(stride=8, width=0.0625)
    report = load_state_dict_strict(model, converted.state_dict, allow_partial=True, source=converted.source)
    scores = {f"score_{n}.{p}" for n in ("fr", "pool3", "pool4") for p in ("weight", "bias")}
    fixed = {"upscore2.weight", "upscore_pool4.weight", "upscore8.weight"}  # not in the checkpoint: stay bilinear
    assert set(report.left_random) == scores | fixed
    torch.testing.assert_close(model.upscore8.weight, bilinear_kernel(21, 16))
    x = torch.randn(2, 32, 7, 7)  # a pool5 map the size of VGG's classifier input
    with torch.inference_mode():
        as_conv = model.fc6(x).flatten(1)
        as_linear = nn.functional.linear(x.flatten(1), state["classifier.0.weight"], state["classifier.0.bias"])
    torch.testing.assert_close(as_conv, as_linear, rtol=1e-4, atol=1e-4)
    bn_state = {**state, "features.1.running_mean": torch.zeros(64)}
    with pytest.raises(CheckpointError, match="vgg16_bn"):
        convert_checkpoint(bn_state, get_model_spec("fcn8s").checkpoint_formats)


@pytest.mark.parametrize("name", FCNS)
def test_export_matches_onnx_runtime_on_two_shapes(name: str, tmp_path: Path) -> None:
    spec = get_model_spec(name)
    loaded = load_model(name, options=dict(TINY[spec.name].options))
    path = tmp_path / f"{name}.onnx"
    result = onnx_from_torch(loaded, path, input_shape=(1, 3, *TINY[spec.name].input_size), simplify=False)
    assert result.passed and result.dynamic and len(result.checks) == 2
    assert result.checks[1].input_shape[2:] != result.checks[0].input_shape[2:]  # the crops follow the size
    photo = preprocess(data.chelsea(), spec.preprocessing, (45, 61))
    (got,) = session_from_onnx(path).run(None, {"input": photo})
    with torch.inference_mode():
        expected = loaded.module(torch.from_numpy(photo)).numpy()
    assert got.shape == (1, 21, 45, 61)
    assert np.abs(got - expected).max() <= 1e-4 * (1 + np.abs(expected).max())  # export's default tolerance


@pytest.mark.slow
def test_full_width_fcn8s_export(tmp_path: Path) -> None:
    result = onnx_from_torch(load_model("fcn8s"), tmp_path / "fcn8s.onnx", input_shape=(1, 3, 224, 288),
                             simplify=False)
    assert result.passed
