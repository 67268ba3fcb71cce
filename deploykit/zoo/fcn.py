"""FCN-32s / FCN-16s / FCN-8s: Long, Shelhamer & Darrell, "Fully convolutional networks for semantic
segmentation", CVPR 2015 / TPAMI 2017. Reference code: shelhamer/fcn.berkeleyvision.org (Caffe, voc-fcn*s) and
its PyTorch port wkentaro/pytorch-fcn (torchfcn/models/fcn{32,16,8}s.py), whose checkpoints load unchanged.

As the reference: VGG16 with conv1_1 padded by 100 (so any input size survives fc6), max pools rounding up
(Caffe), fc6 a 7x7 unpadded conv and fc7 1x1 (dropout in training only), score layers (score_fr, score_pool4,
score_pool3), and upsampling by transposed convolutions initialised to bilinear kernels (upscore 64/32;
upscore2 4/2, upscore16 32/16; upscore_pool4 4/2, upscore8 16/8) that are not trained (requires_grad False; the
reference's lr_mult 0). The skip and output crops are the reference's: score_pool4 from 5, score_pool3 from 9,
the output from 19 (32s), 27 (16s) or 31 (8s). Crops are fixed offsets with lengths taken from the tensors, so
the exported graph keeps dynamic batch, height and width.

Deviations: none in the architecture. `at_once=True` is the reference's FCN-8s trained at once (Caffe
voc-fcn8s-atonce, wkentaro's FCN8sAtOnce): pool4 and pool3 are scaled by 0.01 and 0.0001 before their score
layers; a wkentaro trainer checkpoint whose `arch` is FCN8sAtOnce sets it. Fresh convolutions are He-normal
with zero biases instead of the reference's zero score layers, so a freshly built model gives input-dependent
outputs to verify exports with (trained weights come from a checkpoint). `width` scales VGG channels for the
small test variant.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deploykit.zoo._registry import ModelSpec, Preprocessing, register_model
from deploykit.zoo.backbones.vgg import he_normal_init, run_vgg16_block, scaled, vgg16_convs, vgg16_fc
from deploykit.zoo.checkpoints import Converted, plain_state_dict, register_checkpoint_format

Stride = Literal[32, 16, 8]
CROP_POOL4 = 5
CROP_POOL3 = 9
CROP_OUTPUT = {32: 19, 16: 27, 8: 31}


def bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    """A (channels, channels, size, size) transposed-conv weight that upsamples each channel bilinearly
    (Caffe's bilinear filler / FCN's surgery.upsample_filt), with no cross-channel mixing."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(size) - center) / factor
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = torch.from_numpy(np.outer(ramp, ramp)).float()
    return weight


def _fixed_upsampling(channels: int, size: int, stride: int) -> nn.ConvTranspose2d:
    layer = nn.ConvTranspose2d(channels, channels, size, stride=stride, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, size))
    layer.weight.requires_grad_(False)
    return layer


def _crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    return x[:, :, offset : offset + like.shape[2], offset : offset + like.shape[3]]


class FCN(nn.Module):
    """FCN-{32,16,8}s; input (N, 3, H, W) of any size, logits (N, num_classes, H, W)."""

    def __init__(self, *, stride: Stride = 8, num_classes: int = 21, width: float = 1.0,
                 at_once: bool = False) -> None:
        super().__init__()
        if stride not in CROP_OUTPUT:
            raise ValueError(f"stride must be 32, 16 or 8, got {stride!r}")
        if at_once and stride != 8:
            raise ValueError(f"at_once is FCN-8s trained at once (stride 8), not stride {stride}")
        self.stride = stride
        self.skip_scales = (0.01, 0.0001) if at_once else (1.0, 1.0)  # pool4, pool3
        for name, layer in vgg16_convs(width=width, stem_padding=100).items():
            self.add_module(name, layer)
        fc = vgg16_fc(width=width)
        self.fc6, self.fc7 = fc["fc6"], fc["fc7"]
        self.score_fr = nn.Conv2d(scaled(4096, width), num_classes, 1)
        if stride == 32:
            self.upscore = _fixed_upsampling(num_classes, 64, 32)
        else:
            self.score_pool4 = nn.Conv2d(scaled(512, width), num_classes, 1)
            self.upscore2 = _fixed_upsampling(num_classes, 4, 2)
        if stride == 16:
            self.upscore16 = _fixed_upsampling(num_classes, 32, 16)
        if stride == 8:
            self.score_pool3 = nn.Conv2d(scaled(256, width), num_classes, 1)
            self.upscore_pool4 = _fixed_upsampling(num_classes, 4, 2)
            self.upscore8 = _fixed_upsampling(num_classes, 16, 8)
        he_normal_init(self)  # convolutions only: the bilinear transposed convs stay as they are

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        pools = []
        for block in range(5):
            h = F.max_pool2d(run_vgg16_block(self, block, h), 2, 2, ceil_mode=True)
            pools.append(h)
        h = F.relu(self.fc7(F.relu(self.fc6(h))))  # dropout (training only) left out
        h = self.score_fr(h)
        if self.stride == 32:
            return _crop(self.upscore(h), CROP_OUTPUT[32], x)
        h = self.upscore2(h)
        h = h + _crop(self.score_pool4(_times(pools[3], self.skip_scales[0])), CROP_POOL4, h)
        if self.stride == 16:
            return _crop(self.upscore16(h), CROP_OUTPUT[16], x)
        h = self.upscore_pool4(h)
        h = h + _crop(self.score_pool3(_times(pools[2], self.skip_scales[1])), CROP_POOL3, h)
        return _crop(self.upscore8(h), CROP_OUTPUT[8], x)


def _times(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x if scale == 1.0 else x * scale


def _fcn(*, stride: Stride = 8, num_classes: int = 21, width: float = 1.0, at_once: bool = False) -> FCN:
    """stride: 32, 16 or 8 (the variant). num_classes: score channels. width: scales VGG channels (test
    variants). at_once: FCN-8s trained at once (module docstring)."""
    return FCN(stride=stride, num_classes=num_classes, width=width, at_once=at_once)


def _wkentaro_format(obj: Any) -> Converted | None:
    """wkentaro/pytorch-fcn: its pretrained files are plain state_dicts and its trainer saves
    {'model_state_dict': ..., 'arch': 'FCN8s', ...}; the key names are already deploykit's. The class count
    comes from score_fr; arch FCN8sAtOnce means at_once."""
    arch = obj.get("arch") if isinstance(obj, dict) else None
    state = plain_state_dict(obj)
    if state is None or "score_fr.weight" not in state or "conv1_1.weight" not in state:
        return None
    options: dict[str, Any] = {"num_classes": int(state["score_fr.weight"].shape[0])}
    if arch == "FCN8sAtOnce":
        options["at_once"] = True
    return Converted(state, options, source=f"wkentaro/pytorch-fcn{f' ({arch})' if arch else ''}")


register_checkpoint_format("wkentaro_fcn", _wkentaro_format)

# wkentaro/pytorch-fcn and the Caffe reference: BGR 0-255 minus the ImageNet mean pixel, no scaling.
_PREPROCESSING = Preprocessing(mean=(104.00698793, 116.66876762, 122.67891434), std=(1.0, 1.0, 1.0),
                               channel_order="BGR", input_range=(0.0, 255.0))
_PAPER = "Long, Shelhamer & Darrell 2015, Fully convolutional networks for semantic segmentation (arXiv 1411.4038)"
_VARIANTS: dict[str, tuple[Stride, str]] = {
    "fcn32s": (32, "one x32 upsampling of the fc7 scores (output crop 19)"),
    "fcn16s": (16, "fc7 scores x2 + pool4 scores (crop 5), then x16 (output crop 27)"),
    "fcn8s": (8, "fc7 x2 + pool4 (crop 5), x2 + pool3 (crop 9), then x8 (output crop 31); VOC12 test 62.2"),
}
for _name, (_stride, _what) in _VARIANTS.items():
    register_model(
        ModelSpec(
            name=_name,
            task="segmentation",
            builder=_fcn,
            defaults={"stride": _stride},
            input_size=(500, 500),  # PASCAL VOC images are at most 500x500
            num_classes=21,
            preprocessing=_PREPROCESSING,
            paper=_PAPER,
            description=f"FCN-{_stride}s on VGG16 (conv1_1 padded 100, fc6 7x7 valid, fixed bilinear "
            f"transposed-conv upsampling): {_what}. Any input size; output has the input's size.",
            checkpoint_formats=("wkentaro_fcn", "torchvision_vgg16"),
        )
    )
