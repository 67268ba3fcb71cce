"""DilatedNet: Yu & Koltun, "Multi-scale context aggregation by dilated convolutions", ICLR 2016 (arXiv 1511.07122).
Reference code: fyu/dilation (Caffe): models/dilation8_pascal_voc_deploy.prototxt, network.py, predict.py.

Front-end: VGG16 with pool4 and pool5 removed, conv5 dilated by 2, fc6 a 7x7 conv dilated by 4, fc7 1x1, and a
1x1 classifier ("fc-final"); every convolution is unpadded (valid), as in the reference. The reference feeds a
reflection-padded image (cv2 BORDER_REFLECT_101, `label_margin` 186 pixels on each side: the front-end's valid
convolutions eat 2 * 186 pixels), so the logits come out at 1/8 of the image; they are upsampled x8 with the
reference's `interp_map` bilinear (source = dst / 8, no half-pixel offset, i.e. TF1/ONNX `asymmetric`).
Here the model does the padding itself: it takes the image (H, W multiples of 8) and returns (N, C, H, W).

Context module (Table 1): seven 3x3 convolutions dilated 1, 1, 2, 4, 8, 16, 1 with ReLU, then a 1x1 to C;
Basic has C channels throughout, Large 2C, 2C, 4C, 8C, 16C, 32C, 32C, C. Padded as the VOC deploy model: 33
zeros around the input of the first layer, all layers unpadded, so the output has the input's size. Initialised
as the paper's identity (Section 3; the noise term of the Large module is left out, so a fresh module is exactly
relu(input)); biases zero.

Deviations: the reference's fixed 900x900 input and its softmax are not in the graph (the model pads any image
size and returns logits). Fresh front-end weights are He-normal with zero biases (the reference starts from VGG
weights and fc-final ~ N(0, 0.001)), so an untrained model's output depends on its input. `width` scales the
front-end's channels for the small test variant (1.0 is the paper); the context module is not slimmed, so the
test variants of the context models use 3 classes.
Parameter names are the reference's (conv1_1 ... fc7, fc_final for "fc-final", ctx_conv1_1 ... ctx_fc1, ctx_final
for its ct_* layers); torchvision vgg16 weights fill conv1_1..fc7 (fc6 keeps its weights, now dilated).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from deploykit.zoo._registry import ModelSpec, Preprocessing, min_side_rule, register_model
from deploykit.zoo.backbones.vgg import he_normal_init, run_vgg16_block, scaled, vgg16_convs, vgg16_fc
from deploykit.zoo.layers import resize_bilinear_tf1

LABEL_MARGIN = 186  # pixels of reflection padding the front-end's valid convolutions consume on each side
OUTPUT_STRIDE = 8
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)
CONTEXT_MULTIPLIERS = {"basic": (1, 1, 1, 1, 1, 1, 1), "large": (2, 2, 4, 8, 16, 32, 32)}
CONTEXT_PAD = sum(CONTEXT_DILATIONS)  # 33: the VOC deploy model pads once, before ct_conv1_1
CONTEXT_NAMES = ("ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1", "ctx_conv5_1", "ctx_fc1")
ContextKind = Literal["none", "basic", "large"]


def reflect101_index(size: int, margin: int, device: torch.device) -> torch.Tensor:
    """Source indices of cv2.BORDER_REFLECT_101 padding by `margin`, for any margin (repeated reflection).

    Needs size >= 2. Built from shape arithmetic, so it stays dynamic in the exported graph.
    """
    index = torch.arange(-margin, size + margin, device=device)
    period = 2 * (size - 1)
    index = torch.remainder(index, period)
    return torch.minimum(index, period - index)


def _identity_init(conv: nn.Conv2d, classes: int) -> None:
    """Yu & Koltun's identity initialisation: w[b, a, centre] = C / c_out where input channel a and output
    channel b belong to the same class group (floor(a C / c_in) == floor(b C / c_out)), zero elsewhere."""
    c_out, c_in, kh, kw = conv.weight.shape
    if conv.weight.is_meta:  # built on the meta device to count parameters: there are no values to set
        return
    group_in = torch.arange(c_in) * classes // c_in
    group_out = torch.arange(c_out) * classes // c_out
    same = (group_out[:, None] == group_in[None, :]).float()
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, :, kh // 2, kw // 2] = same * (classes / c_out)
        assert conv.bias is not None
        conv.bias.zero_()


class ContextModule(nn.Module):
    """Table 1's context module over C class maps; identity at initialisation (up to the first ReLU)."""

    def __init__(self, classes: int, kind: Literal["basic", "large"]) -> None:
        super().__init__()
        channels = [classes * m for m in CONTEXT_MULTIPLIERS[kind]]
        in_ch = classes
        for name, out_ch, dilation in zip(CONTEXT_NAMES, channels, CONTEXT_DILATIONS, strict=True):
            conv = nn.Conv2d(in_ch, out_ch, 3, dilation=dilation)
            _identity_init(conv, classes)
            self.add_module(name, conv)
            in_ch = out_ch
        self.ctx_final = nn.Conv2d(in_ch, classes, 1)
        _identity_init(self.ctx_final, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (CONTEXT_PAD,) * 4)
        for name in CONTEXT_NAMES:
            x = F.relu(getattr(self, name)(x))
        return self.ctx_final(x)


class DilatedNet(nn.Module):
    """Front-end (+ optional context module); input (N, 3, H, W), H and W multiples of 8; logits (N, C, H, W)."""

    def __init__(self, *, num_classes: int = 21, context: ContextKind = "none", width: float = 1.0) -> None:
        super().__init__()
        if context not in ("none", "basic", "large"):
            raise ValueError(f"context must be 'none', 'basic' or 'large', got {context!r}")
        for name, layer in vgg16_convs(width=width, padding=(0,) * 5, dilation=(1, 1, 1, 1, 2)).items():
            self.add_module(name, layer)
        fc = vgg16_fc(width=width, dilation=4)
        self.fc6, self.fc7 = fc["fc6"], fc["fc7"]
        self.fc_final = nn.Conv2d(scaled(4096, width), num_classes, 1)
        he_normal_init(self)  # before the context module, which has its own identity initialisation
        self.context = ContextModule(num_classes, context) if context != "none" else None

    def pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """The reference's input: the image mirrored (BORDER_REFLECT_101) by LABEL_MARGIN on every side."""
        rows = reflect101_index(x.shape[2], LABEL_MARGIN, x.device)
        cols = reflect101_index(x.shape[3], LABEL_MARGIN, x.device)
        return x.index_select(2, rows).index_select(3, cols)

    def front_end(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the reflection-padded input: (H + 372, W + 372) -> (H / 8, W / 8), all convs valid."""
        for block in range(3):  # Caffe pools round up; with H, W multiples of 8 the sizes are even anyway
            x = F.max_pool2d(run_vgg16_block(self, block, x), 2, 2, ceil_mode=True)
        x = run_vgg16_block(self, 4, run_vgg16_block(self, 3, x))
        x = F.relu(self.fc7(F.relu(self.fc6(x))))  # dropout (training only) left out
        return self.fc_final(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.front_end(self.pad_input(x))
        if self.context is not None:
            logits = self.context(logits)
        return resize_bilinear_tf1(logits, factor=OUTPUT_STRIDE)


def _dilatednet(*, num_classes: int = 21, context: ContextKind = "none", width: float = 1.0) -> DilatedNet:
    return DilatedNet(num_classes=num_classes, context=context, width=width)


_PAPER = "Yu & Koltun 2016, Multi-scale context aggregation by dilated convolutions (arXiv 1511.07122)"
# The reference's Caffe inputs: BGR 0-255 minus its VOC mean pixel (pascal_voc.json).
_PREPROCESSING = Preprocessing(mean=(102.93, 111.36, 116.52), std=(1.0, 1.0, 1.0), channel_order="BGR",
                               input_range=(0.0, 255.0))
_VARIANTS = {
    "dilatednet_frontend": ("none", "front-end only (VOC12 test 67.6 mIoU in the paper)"),
    "dilatednet_context_basic": ("basic", "front-end + Basic context module (C channels throughout)"),
    "dilatednet_context_large": ("large", "front-end + Large context module, the VOC 'dilation8' model "
                                          "(VOC12 test 73.5 mIoU)"),
}
for _name, (_context, _what) in _VARIANTS.items():
    register_model(
        ModelSpec(
            name=_name,
            task="segmentation",
            builder=_dilatednet,
            defaults={"context": _context},
            input_size=(528, 528),  # the reference deploy net: 900x900 = 528 + 2 * 186 margin, 66x66 logits
            num_classes=21,
            preprocessing=_PREPROCESSING,
            paper=_PAPER,
            description=f"DilatedNet {_what}: VGG16 without pool4/pool5, conv5 dilated 2, fc6 7x7 dilated 4, "
            "valid convolutions on the image mirrored by 186 pixels (done inside the model), logits at 1/8 "
            "upsampled x8 (asymmetric bilinear, as the reference's interp_map). H, W multiples of 8.",
            checkpoint_formats=("torchvision_vgg16",),
            size_multiple=OUTPUT_STRIDE,
            # reflect-101 padding mirrors about the edge pixel: a 1-pixel side has no period (ZeroDivisionError
            # in PyTorch, 'Integer modulo by zero' in ONNX Runtime)
            size_rule=min_side_rule(2, "DilatedNet's mirrored margin needs sides of at least 2 pixels"),
        )
    )
