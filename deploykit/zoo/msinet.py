"""MSI-Net: Kroner et al., "Contextual encoder-decoder network for visual saliency prediction", Neural Networks
129 (2020), arXiv 1902.06634. Reference code: alexanderkroner/saliency (TensorFlow 1), model.py.

Layer for layer as the TF reference: VGG16 at output stride 8 (pool4 and pool5 are 2x2 stride-1 max pools with TF
`same` padding, i.e. one extra row/column at the bottom/right; conv5 dilated by 2), the concat of pool3, pool4 and
pool5 (1280 channels at H/8), an ASPP of a 1x1, three 3x3 convs dilated 4/8/12 and image pooling (mean -> 1x1 ->
ReLU -> resize), all 256 channels with ReLU, concat -> 1x1 256 ReLU; a decoder of three [bilinear x2 -> 3x3 conv
+ ReLU] with 128/64/32 channels and a last 3x3 conv to one channel; the output is min-max normalised per image.
Every resize has TF1 `resize_bilinear` semantics (align_corners=False, half_pixel_centers=False), exported as
ONNX Resize `asymmetric`.

Deviations from the reference code: the mean subtraction (the BGR VGG means applied to RGB channels, a quirk
the trained weights depend on) is not in the graph but in the spec's Preprocessing, as for every zoo model;
`width` scales all channel counts for the small test variant (1.0 is the paper). Fresh weights are He-normal
with zero biases (TF's default is Glorot) so that an untrained model's output depends on its input.
Parameter names follow the PyTorch port khawkins98/foveacast-training (conv1_1 ... conv5_3, aspp_b1..b5,
aspp_proj, decoder_conv1..4), whose checkpoints load unchanged; torchvision vgg16 weights fill the encoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deploykit.zoo._registry import ModelSpec, Preprocessing, min_side_rule, register_model
from deploykit.zoo.backbones.vgg import he_normal_init, run_vgg16_block, scaled, vgg16_convs
from deploykit.zoo.checkpoints import Converted, plain_state_dict, register_checkpoint_format
from deploykit.zoo.layers import resize_bilinear_tf1

ASPP_CHANNELS = 256
ASPP_DILATIONS = (4, 8, 12)
DECODER_CHANNELS = (128, 64, 32)
EPS = 1e-7


def _pool_same_stride1(x: torch.Tensor) -> torch.Tensor:
    # TF's 2x2 stride-1 `same` pooling pads one row/column at the bottom/right. The inputs come out of a ReLU
    # (>= 0), so a zero pad gives the same maximum as TF, which ignores the padding.
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1)), kernel_size=2, stride=1)


class MSINet(nn.Module):
    """MSI-Net; input (N, 3, H, W) with H and W multiples of 8, output (N, 1, H, W) in [0, 1] per image."""

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        dilation = (1, 1, 1, 1, 2)
        for name, layer in vgg16_convs(width=width, padding=dilation, dilation=dilation).items():
            self.add_module(name, layer)
        encoder_ch = scaled(256, width) + 2 * scaled(512, width)  # pool3 + pool4 + pool5 = 1280
        aspp = scaled(ASPP_CHANNELS, width)
        self.aspp_b1 = nn.Conv2d(encoder_ch, aspp, 1)
        self.aspp_b2 = nn.Conv2d(encoder_ch, aspp, 3, padding=ASPP_DILATIONS[0], dilation=ASPP_DILATIONS[0])
        self.aspp_b3 = nn.Conv2d(encoder_ch, aspp, 3, padding=ASPP_DILATIONS[1], dilation=ASPP_DILATIONS[1])
        self.aspp_b4 = nn.Conv2d(encoder_ch, aspp, 3, padding=ASPP_DILATIONS[2], dilation=ASPP_DILATIONS[2])
        self.aspp_b5 = nn.Conv2d(encoder_ch, aspp, 1)  # image pooling
        self.aspp_proj = nn.Conv2d(5 * aspp, aspp, 1)
        dec = [scaled(c, width) for c in DECODER_CHANNELS]
        self.decoder_conv1 = nn.Conv2d(aspp, dec[0], 3, padding=1)
        self.decoder_conv2 = nn.Conv2d(dec[0], dec[1], 3, padding=1)
        self.decoder_conv3 = nn.Conv2d(dec[1], dec[2], 3, padding=1)
        self.decoder_conv4 = nn.Conv2d(dec[2], 1, 3, padding=1)
        he_normal_init(self)

    def encoder(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(run_vgg16_block(self, 0, x), 2, 2)
        x = F.max_pool2d(run_vgg16_block(self, 1, x), 2, 2)
        pool3 = F.max_pool2d(run_vgg16_block(self, 2, x), 2, 2)
        pool4 = _pool_same_stride1(run_vgg16_block(self, 3, pool3))
        pool5 = _pool_same_stride1(run_vgg16_block(self, 4, pool4))
        return torch.cat([pool3, pool4, pool5], dim=1)

    def aspp(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.aspp_b5(x.mean(dim=(2, 3), keepdim=True)))
        branches = [
            F.relu(self.aspp_b1(x)),
            F.relu(self.aspp_b2(x)),
            F.relu(self.aspp_b3(x)),
            F.relu(self.aspp_b4(x)),
            resize_bilinear_tf1(pooled, like=x),
        ]
        return F.relu(self.aspp_proj(torch.cat(branches, dim=1)))

    def decoder(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.decoder_conv1, self.decoder_conv2, self.decoder_conv3):
            x = F.relu(conv(resize_bilinear_tf1(x, factor=2)))
        return self.decoder_conv4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.decoder(self.aspp(self.encoder(x)))
        maps = maps - maps.amin(dim=(1, 2, 3), keepdim=True)
        return maps / (EPS + maps.amax(dim=(1, 2, 3), keepdim=True))


def _msinet(*, width: float = 1.0) -> MSINet:
    return MSINet(width=width)


def _foveacast_format(obj: Any) -> Converted | None:
    """khawkins98/foveacast-training: a plain state_dict whose keys are already deploykit's."""
    state = plain_state_dict(obj)
    if state is None or "aspp_proj.weight" not in state or "decoder_conv4.weight" not in state:
        return None
    return Converted(state, source="foveacast-training MSI-Net port")


register_checkpoint_format("msinet_foveacast", _foveacast_format)

register_model(
    ModelSpec(
        name="msinet",
        task="saliency",
        builder=_msinet,
        input_size=(240, 320),
        num_classes=1,
        # RGB 0-255 minus the BGR-ordered VGG means, applied to RGB as the reference does (its weights expect it).
        preprocessing=Preprocessing(
            mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), channel_order="RGB", input_range=(0.0, 255.0)
        ),
        paper="Kroner et al. 2020, Contextual encoder-decoder network for visual saliency prediction "
        "(arXiv 1902.06634)",
        description="MSI-Net saliency: VGG16 at output stride 8 (dilated conv5), ASPP 4/8/12 with image "
        "pooling, bilinear decoder with TF1 resize semantics, per-image min-max output in [0, 1]. "
        "H and W must be multiples of 8 (SALICON 240x320, MIT1003 360x360, CAT2000 216x384).",
        output_names=("saliency",),
        checkpoint_formats=("msinet_foveacast", "torchvision_vgg16_features"),
        size_multiple=8,
        # PyTorch's max pooling refuses a side below 8 (a 0-pixel 1/8 map); the ONNX graph instead answers with
        # an 8x8 map for a 2x2 input
        size_rule=min_side_rule(8, "MSI-Net's 1/8 feature map needs sides of at least 8 pixels"),
    )
)
