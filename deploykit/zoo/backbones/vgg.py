"""VGG16 pieces (Simonyan & Zisserman, ICLR 2015) for the models built on it: MSI-Net, DilatedNet and FCN.

The layers carry the names of the Caffe/TF reference models (conv1_1 ... conv5_3, fc6, fc7), which are also the
key names of the PyTorch ports deploykit loads (wkentaro/pytorch-fcn, the MSI-Net port). torchvision's `vgg16`
ImageNet checkpoint maps onto them by a rename of its indices (features.0 -> conv1_1, classifier.0 -> fc6 ...):
fc6 and fc7 become 7x7 and 1x1 convolutions holding the same numbers, the FCN paper's "convolutionalization".
The models differ in padding, pooling and dilation, so this file only makes the layers and runs a block; each
model wires its own forward. The rename also knows vgg16_bn's layout (bn1_1 ...), so that its weights are
recognised and refused with a clear message: none of these models has BatchNorm (DeconvNet, which has, converts
vgg16_bn in its own module).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deploykit.errors import CheckpointError
from deploykit.zoo.checkpoints import Converted, FormatFn, StateDict, plain_state_dict, register_checkpoint_format

VGG16_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("conv1_1", "conv1_2"),
    ("conv2_1", "conv2_2"),
    ("conv3_1", "conv3_2", "conv3_3"),
    ("conv4_1", "conv4_2", "conv4_3"),
    ("conv5_1", "conv5_2", "conv5_3"),
)
VGG16_CHANNELS = (64, 128, 256, 512, 512)
VGG16_FC_CHANNELS = 4096


def scaled(channels: int, width: float) -> int:
    """`channels` times the width multiplier of a slimmed test variant (at least 1)."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    return max(1, round(channels * width))


def vgg16_convs(
    *,
    width: float = 1.0,
    padding: Sequence[int] = (1, 1, 1, 1, 1),
    dilation: Sequence[int] = (1, 1, 1, 1, 1),
    stem_padding: int | None = None,
) -> dict[str, nn.Conv2d]:
    """The 13 3x3 convolutions by name, with padding and dilation per block.

    `stem_padding` overrides conv1_1's padding (FCN pads it by 100).
    """
    layers: dict[str, nn.Conv2d] = {}
    in_ch = 3
    for block, (names, ch) in enumerate(zip(VGG16_BLOCKS, VGG16_CHANNELS, strict=True)):
        out_ch = scaled(ch, width)
        for name in names:
            pad = stem_padding if name == "conv1_1" and stem_padding is not None else padding[block]
            layers[name] = nn.Conv2d(in_ch, out_ch, 3, padding=pad, dilation=dilation[block])
            in_ch = out_ch
    return layers


def vgg16_fc(*, width: float = 1.0, dilation: int = 1) -> dict[str, nn.Conv2d]:
    """fc6 (7x7, unpadded) and fc7 (1x1) as convolutions; DilatedNet dilates fc6 by 4."""
    c5, fc = scaled(VGG16_CHANNELS[-1], width), scaled(VGG16_FC_CHANNELS, width)
    return {"fc6": nn.Conv2d(c5, fc, 7, dilation=dilation), "fc7": nn.Conv2d(fc, fc, 1)}


def he_normal_init(model: nn.Module) -> None:
    """He-normal weights and zero biases for every Conv2d of `model`.

    The zoo's models get their weights from checkpoints; this initialisation keeps a freshly built deep plain
    (BatchNorm-free) network's outputs input-dependent, so export parity checks compare real signals rather
    than the constant that PyTorch's default init (which shrinks activations and adds biases) converges to.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not module.weight.is_meta:  # meta: built only to count
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def run_vgg16_block(model: nn.Module, block: int, x: torch.Tensor) -> torch.Tensor:
    """conv + ReLU for every layer of block `block` (0-based), read from `model`'s attributes."""
    for name in VGG16_BLOCKS[block]:
        x = F.relu(getattr(model, name)(x))
    return x


def torchvision_vgg16_names(*, batch_norm: bool) -> dict[str, str]:
    """torchvision module path -> deploykit name: features.0 -> conv1_1 (features.1 -> bn1_1 for vgg16_bn)."""
    names: dict[str, str] = {}
    index = 0
    for block in VGG16_BLOCKS:
        for conv in block:
            names[f"features.{index}"] = conv
            index += 1
            if batch_norm:
                names[f"features.{index}"] = conv.replace("conv", "bn")
                index += 1
            index += 1  # ReLU
        index += 1  # max pooling
    names["classifier.0"] = "fc6"
    names["classifier.3"] = "fc7"
    return names


def _looks_like_torchvision_vgg16(state: Mapping[str, torch.Tensor]) -> bool:
    return "features.0.weight" in state and "classifier.0.weight" in state and "features.28.weight" in state


def vgg16_from_torchvision(state: Mapping[str, torch.Tensor], *, include_fc: bool) -> StateDict:
    """Rename a torchvision vgg16/vgg16_bn state_dict to deploykit names; the 1000-class layer is dropped.

    With include_fc, fc6/fc7 are reshaped to 7x7/1x1 conv weights; without, they are dropped too.
    """
    batch_norm = "features.1.running_mean" in state
    names = torchvision_vgg16_names(batch_norm=batch_norm)
    out: StateDict = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module not in names or (names[module] in ("fc6", "fc7") and not include_fc):
            continue
        target = names[module]
        if target == "fc6" and param == "weight":
            value = value.reshape(value.shape[0], -1, 7, 7)
        elif target == "fc7" and param == "weight":
            value = value.reshape(*value.shape, 1, 1)
        out[f"{target}.{param}"] = value
    return out


def _torchvision_format(include_fc: bool) -> FormatFn:
    def convert(obj: Any) -> Converted | None:
        state = plain_state_dict(obj)
        if state is None or not _looks_like_torchvision_vgg16(state):
            return None
        if "features.1.running_mean" in state:
            raise CheckpointError(
                "these are torchvision vgg16_bn weights, but this model is VGG16 without BatchNorm; "
                "use torchvision's vgg16 (IMAGENET1K_V1) weights"
            )
        return Converted(vgg16_from_torchvision(state, include_fc=include_fc), source="torchvision vgg16")

    return convert


# FCN and DilatedNet use fc6/fc7; MSI-Net keeps only the convolutions.
register_checkpoint_format("torchvision_vgg16", _torchvision_format(include_fc=True))
register_checkpoint_format("torchvision_vgg16_features", _torchvision_format(include_fc=False))
