"""MSI-Net: TF1 resize semantics (torch, numpy reference, ONNX), the reference's layer facts, counts, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from deploykit.errors import CheckpointError
from deploykit.evaluate import session_from_onnx
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.images import preprocess
from deploykit.zoo import get_model_spec
from deploykit.zoo.checkpoints import convert_checkpoint, load_state_dict_strict
from deploykit.zoo.flops import count_complexity
from deploykit.zoo.layers import resize_bilinear_tf1
from deploykit.zoo.msinet import MSINet, _pool_same_stride1
from deploykit.zoo.sources import load_model
from tests.fixtures.tiny import TINY


def tf1_resize_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """tf.image.resize_bilinear(align_corners=False, half_pixel_centers=False) on one HxW map, written
    from TF1's kernel: in = out * (in_size / out_size), lower = floor, upper = min(ceil, in_size - 1)."""
    in_h, in_w = image.shape
    scale_y, scale_x = np.float32(in_h) / np.float32(out_h), np.float32(in_w) / np.float32(out_w)
    out = np.zeros((out_h, out_w), np.float32)
    for y in range(out_h):
        fy = np.float32(y) * scale_y
        y0, y1, dy = int(np.floor(fy)), min(int(np.ceil(fy)), in_h - 1), fy - np.floor(fy)
        for x in range(out_w):
            fx = np.float32(x) * scale_x
            x0, x1, dx = int(np.floor(fx)), min(int(np.ceil(fx)), in_w - 1), fx - np.floor(fx)
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * dx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * dx
            out[y, x] = top + (bottom - top) * dy
    return out


# A hand case: [[0, 10], [20, 30]] upsampled x2. TF1 samples at 0, 0.5, 1, 1.5 and repeats the last row/column.
HAND_IN = np.array([[0.0, 10.0], [20.0, 30.0]], np.float32)
HAND_OUT = np.array([[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]], np.float32)


def test_tf1_resize_hand_case() -> None:
    np.testing.assert_array_equal(tf1_resize_reference(HAND_IN, 4, 4), HAND_OUT)
    got = resize_bilinear_tf1(torch.from_numpy(HAND_IN)[None, None], factor=2)[0, 0].numpy()
    np.testing.assert_array_equal(got, HAND_OUT)
    # torch's half-pixel bilinear is a different function: this is why MSI-Net cannot use F.interpolate.
    half_pixel = F.interpolate(torch.from_numpy(HAND_IN)[None, None], scale_factor=2, mode="bilinear")
    assert np.abs(half_pixel[0, 0].numpy() - HAND_OUT).max() >= 2.5


@pytest.mark.parametrize(("in_hw", "out_hw"), [((3, 5), (6, 10)), ((3, 5), (7, 4)), ((1, 1), (5, 6))])
def test_tf1_resize_matches_numpy_reference(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *in_hw, generator=torch.Generator().manual_seed(0))
    got = resize_bilinear_tf1(x, like=torch.empty(1, 1, *out_hw)).numpy()
    for n in range(2):
        for c in range(3):
            np.testing.assert_allclose(got[n, c], tf1_resize_reference(x[n, c].numpy(), *out_hw), atol=1e-6)


class _Resizes(torch.nn.Module):
    def forward(self, x: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return resize_bilinear_tf1(x, factor=2), resize_bilinear_tf1(x, like=like)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_tf1_resize_exports_as_asymmetric_onnx_resize(tmp_path: Path) -> None:
    path = tmp_path / "resize.onnx"
    axes = {0: "n", 2: "h", 3: "w"}
    torch.onnx.export(_Resizes(), (torch.randn(1, 2, 3, 5), torch.randn(1, 1, 7, 4)), str(path), dynamo=False,
                      opset_version=18, input_names=["x", "like"], output_names=["up", "sized"],
                      dynamic_axes={"x": axes, "like": axes, "up": axes, "sized": axes})
    resizes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"]
    assert len(resizes) == 2
    for node in resizes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["coordinate_transformation_mode"] == b"asymmetric" and attrs["mode"] == b"linear"
    session = session_from_onnx(path)
    for x_shape, like_shape in [((1, 2, 3, 5), (1, 1, 7, 4)), ((2, 2, 6, 4), (1, 1, 9, 13))]:
        x, like = torch.randn(x_shape), torch.randn(like_shape)
        up, sized = session.run(None, {"x": x.numpy(), "like": like.numpy()})
        np.testing.assert_allclose(up, resize_bilinear_tf1(x, factor=2).numpy(), atol=1e-5)
        np.testing.assert_allclose(sized, resize_bilinear_tf1(x, like=like).numpy(), atol=1e-5)
        np.testing.assert_allclose(sized[0, 0], tf1_resize_reference(x[0, 0].numpy(), *like_shape[2:]), atol=1e-5)


def test_pool4_pool5_pad_bottom_right() -> None:
    # TF `same` for a 2x2 stride-1 pool pads one row/column at the bottom/right, never at the top/left.
    x = torch.tensor([[4.0, 1.0], [2.0, 3.0]])[None, None]
    assert _pool_same_stride1(x)[0, 0].tolist() == [[4.0, 3.0], [3.0, 3.0]]


def test_reference_layer_layout() -> None:
    model = MSINet()
    assert model.conv5_1.dilation == (2, 2) and model.conv4_3.dilation == (1, 1)
    assert [m.dilation[0] for m in (model.aspp_b2, model.aspp_b3, model.aspp_b4)] == [4, 8, 12]
    assert model.aspp_b1.in_channels == 1280 and model.aspp_proj.in_channels == 5 * 256
    assert [c.out_channels for c in (model.decoder_conv1, model.decoder_conv2, model.decoder_conv3,
                                     model.decoder_conv4)] == [128, 64, 32, 1]
    with torch.inference_mode():
        features = model.encoder(torch.zeros(1, 3, 32, 40))
    assert features.shape == (1, 1280, 4, 5)  # output stride 8


def test_parameter_count_is_the_reference() -> None:
    with torch.device("meta"):  # shapes only
        assert sum(p.numel() for p in MSINet().parameters()) == 24_934_209


def test_multiply_adds() -> None:
    with torch.device("meta"):  # shapes only, no arithmetic
        at_salicon = count_complexity(MSINet(), (1, 3, 240, 320))
        at_mit1003 = count_complexity(MSINet(), (1, 3, 360, 360))
    assert at_salicon.params == 24_934_209
    assert at_salicon.madds == pytest.approx(45.5e9, rel=0.02)
    assert at_mit1003.madds == pytest.approx(76.8e9, rel=0.02)


def _photos(size: tuple[int, int]) -> np.ndarray:
    pre = get_model_spec("msinet").preprocessing
    return np.concatenate([preprocess(image, pre, size) for image in (data.astronaut(), data.coffee())])


def test_output_is_min_max_normalised_per_image() -> None:
    torch.manual_seed(0)  # a random narrow net can have all ReLUs dead on an image: fix the draw
    model = MSINet(width=0.0625).eval()
    photos = torch.from_numpy(_photos((48, 64)))
    with torch.inference_mode():
        maps = model(photos).numpy()
        raw = model.decoder(model.aspp(model.encoder(photos))).numpy()
    assert maps.shape == (2, 1, 48, 64)
    for single, logits in zip(maps, raw, strict=True):
        assert single.min() == 0.0 and 1 - 1e-5 < single.max() <= 1.0
        shifted = logits - logits.min()
        np.testing.assert_allclose(single, shifted / (1e-7 + shifted.max()), rtol=1e-6)


def test_export_matches_onnx_runtime_on_two_shapes_and_photos(tmp_path: Path) -> None:
    spec = get_model_spec("msinet")
    loaded = load_model("msinet", options=dict(TINY[spec.name].options))
    path = tmp_path / "msinet.onnx"
    result = onnx_from_torch(loaded, path, input_shape=(1, 3, *TINY[spec.name].input_size), simplify=False)
    assert result.passed and result.dynamic
    assert [c.input_shape for c in result.checks] == [(1, 3, 48, 64), (2, 3, 56, 80)]
    assert all(c.outputs["saliency"].max_abs <= 1e-5 for c in result.checks)
    graph = onnx.load(str(path)).graph
    modes = [onnx.helper.get_attribute_value(a) for n in graph.node if n.op_type == "Resize" for a in n.attribute
             if a.name == "coordinate_transformation_mode"]
    assert modes == [b"asymmetric"] * 4  # image pooling + three decoder upsamplings
    photos = _photos((64, 96))
    (got,) = session_from_onnx(path).run(None, {"input": photos})
    with torch.inference_mode():
        expected = loaded.module(torch.from_numpy(photos)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


REFERENCE_PORT_LAYERS = (
    [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True) for i in range(1, n + 1)]
    + [f"aspp_b{i}" for i in range(1, 6)] + ["aspp_proj"] + [f"decoder_conv{i}" for i in range(1, 5)]
)


def test_loads_the_pytorch_port_checkpoint_layout() -> None:
    model = MSINet()
    assert set(model.state_dict()) == {f"{layer}.{p}" for layer in REFERENCE_PORT_LAYERS for p in ("weight", "bias")}
    checkpoint = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    converted = convert_checkpoint(checkpoint, get_model_spec("msinet").checkpoint_formats)
    assert converted.source == "foveacast-training MSI-Net port"
    load_state_dict_strict(model, converted.state_dict, allow_partial=False, source=converted.source)
    assert torch.equal(model.decoder_conv4.weight, checkpoint["decoder_conv4.weight"])


TORCHVISION_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # indices in torchvision's vgg16.features


def torchvision_vgg16_state(width: int = 1) -> dict[str, torch.Tensor]:
    """A torchvision vgg16 state_dict layout (random numbers) with channels divided by `width`."""
    channels = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    state, in_ch = {}, 3
    for index, out_ch in zip(TORCHVISION_VGG16_CONVS, channels, strict=True):
        state[f"features.{index}.weight"] = torch.randn(out_ch // width, in_ch, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(out_ch // width)
        in_ch = out_ch // width
    fc = 4096 // width
    for name, shape in (("classifier.0", (fc, in_ch * 49)), ("classifier.3", (fc, fc)), ("classifier.6", (1000, fc))):
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.randn(shape), torch.randn(shape[0])
    return state


def test_torchvision_vgg16_fills_the_encoder_only() -> None:
    model = MSINet(width=0.0625)
    state = torchvision_vgg16_state(width=16)
    converted = convert_checkpoint(state, get_model_spec("msinet").checkpoint_formats)
    assert converted.source == "torchvision vgg16"
    with pytest.raises(CheckpointError, match="missing: aspp_b1"):
        load_state_dict_strict(model, converted.state_dict, allow_partial=False, source=converted.source)
    report = load_state_dict_strict(model, converted.state_dict, allow_partial=True, source=converted.source)
    assert report.loaded == 26 and "aspp_proj.weight" in report.left_random
    assert torch.equal(model.conv5_3.weight, state["features.28.weight"])
    assert torch.equal(model.conv2_1.bias, state["features.5.bias"])


@pytest.mark.slow
def test_full_size_export_at_240x320(tmp_path: Path) -> None:
    loaded = load_model("msinet")
    result = onnx_from_torch(loaded, tmp_path / "msinet.onnx", simplify=False)
    assert result.passed and result.input_shape == (1, 3, 240, 320)
    assert all(c.outputs["saliency"].max_abs <= 1e-5 for c in result.checks)
