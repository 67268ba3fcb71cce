"""DeepLabv3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation", arXiv 1802.02611) with ResNet-50/101, modified aligned Xception-65 and MobileNetV2 backbones.

Encoder: backbone at output stride 16 (ASPP rates 6/12/18) or 8 (12/24/36); ASPP with image pooling, 256
channels, BN+ReLU, 1x1 projection, dropout 0.1. Decoder: low-level features (stride 4) -> 1x1 conv to 48
channels; ASPP output resized to their size; concat [ASPP, low-level]; `decoder_convs` 3x3 convs of 256
channels (paper: two); 1x1 logits; bilinear resize to the input size. `separable` makes the ASPP's atrous
convs and the decoder's 3x3 convs depthwise-separable with BN+ReLU after the depthwise (the paper's "SC").
`decoder=False` is DeepLabv3 as in the TF reference (ASPP -> logits); `head_convs=1` adds the 3x3 conv-BN-ReLU
that torchvision's and VainF's DeepLabHead put between ASPP and the logits (Chen et al. 2017, arXiv 1706.05587,
has none). align_corners=True is the TF reference's resize; VainF/DeepLabV3Plus-Pytorch uses False.

Deviations from the TF reference: torchvision-layout ResNets by default (the layout of every PyTorch
checkpoint; `resnet_layout="tf_beta"` builds the paper's resnet_v1_beta, see backbones/resnet.py), ImageNet
mean/std input normalisation (as both PyTorch repositories; TF scales Xception, MobileNet and ResNet-beta input to
[-1, 1]), the MobileNetV2 variant has ASPP and decoder (as VainF; TF's MobileNetV2 model has neither).
`compat` reproduces a PyTorch repository's computation exactly (set when loading its checkpoints; formats at the
end of this file): "vainf" concatenates [low-level, ASPP], changes MobileNetV2 padding and, with `separable`, builds
its --separable_conv form (network/_deeplab.py convert_to_separable_conv: every 3x3 conv of the ASPP and decoder
or DeepLabHead becomes depthwise -> pointwise with no BN or ReLU between them, the BN and ReLU after the pointwise
conv kept: the original Xception's separable conv, not the paper's "SC" with BN+ReLU after the depthwise conv);
"jfzhang95" changes backbone dilations and Xception details. The output is logits at input resolution, named "output".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from deploykit.zoo._registry import IMAGENET, ModelSpec, register_model
from deploykit.zoo.backbones import build_backbone
from deploykit.zoo.backbones.base import Backbone, check_output_stride, scaled
from deploykit.zoo.backbones.resnet import BLOCKS, ResNet
from deploykit.zoo.checkpoints import Converted, StateDict, register_checkpoint_format
from deploykit.zoo.layers import ASPP, ConvBNReLU, conv3x3_bn_relu, init_conv_weights, resize_to

PAPER = "Chen et al. 2018, Encoder-Decoder with Atrous Separable Convolution (DeepLabv3+), arXiv 1802.02611"
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


class Decoder(nn.Module):
    """Low-level projection to 48 channels, concat with the resized ASPP output, `num_convs` 3x3 convs."""

    def __init__(self, low_level_channels: int, aspp_channels: int, *, project_channels: int, channels: int,
                 num_convs: int, separable: bool, align_corners: bool, low_level_first: bool,
                 depthwise_norm: bool) -> None:
        super().__init__()
        self.project = ConvBNReLU(low_level_channels, project_channels, 1)
        self.convs = conv_stack(aspp_channels + project_channels, channels, num_convs, separable=separable,
                                depthwise_norm=depthwise_norm)
        self.out_channels = channels
        self.align_corners = align_corners
        self.low_level_first = low_level_first  # VainF's concat order

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.project(low_level)
        x = resize_to(x, low_level.shape[-2:], self.align_corners)
        parts = [low_level, x] if self.low_level_first else [x, low_level]
        return self.convs(torch.cat(parts, dim=1))


def conv_stack(in_channels: int, channels: int, count: int, *, separable: bool, depthwise_norm: bool) -> nn.Sequential:
    """`count` 3x3 conv-BN-ReLU layers of `channels` (dense, or separable: see conv3x3_bn_relu)."""
    return nn.Sequential(*(conv3x3_bn_relu(in_channels if i == 0 else channels, channels, separable=separable,
                                           depthwise_norm=depthwise_norm) for i in range(count)))


class DeepLabV3Plus(nn.Module):
    """backbone -> ASPP -> [decoder | head convs] -> 1x1 logits -> resize to the input size."""

    def __init__(self, backbone: Backbone, *, num_classes: int, output_stride: int, decoder: bool,
                 decoder_convs: int, head_convs: int, separable: bool, depthwise_norm: bool, align_corners: bool,
                 width_multiplier: float, low_level_first: bool) -> None:
        super().__init__()
        channels = scaled(256, width_multiplier)
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels, channels, ASPP_RATES[output_stride], separable=separable,
                         align_corners=align_corners, depthwise_norm=depthwise_norm)
        self.decoder: Decoder | None = None
        self.head: nn.Sequential | None = None
        if decoder:
            self.decoder = Decoder(backbone.low_level_channels, channels, project_channels=scaled(48, width_multiplier),
                                   channels=channels, num_convs=decoder_convs, separable=separable,
                                   align_corners=align_corners, low_level_first=low_level_first,
                                   depthwise_norm=depthwise_norm)
        elif head_convs:
            self.head = conv_stack(channels, channels, head_convs, separable=separable, depthwise_norm=depthwise_norm)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.align_corners = align_corners
        for module in (self.aspp, self.decoder, self.head, self.classifier):
            if module is not None:
                init_conv_weights(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, low_level = self.backbone(x)
        y = self.aspp(features)
        if self.decoder is not None:
            y = self.decoder(y, low_level)
        elif self.head is not None:
            y = self.head(y)
        return resize_to(self.classifier(y), x.shape[-2:], self.align_corners)


def _build(backbone: str, *, output_stride: int, decoder: bool, separable: bool, decoder_convs: int,
           head_convs: int, align_corners: bool, num_classes: int, width_multiplier: float, compat: str,
           resnet_layout: str = "torchvision") -> DeepLabV3Plus:
    check_output_stride(output_stride)
    if decoder and decoder_convs < 1:
        raise ValueError(f"decoder_convs must be at least 1 with the decoder on (paper: 2), got {decoder_convs}")
    if decoder_convs < 0 or head_convs < 0:
        raise ValueError(f"decoder_convs and head_convs must not be negative, got {decoder_convs}, {head_convs}")
    if decoder and head_convs:
        raise ValueError(f"head_convs={head_convs} is for DeepLabv3 (decoder=False); the decoder has decoder_convs")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    net: Backbone
    if resnet_layout == "torchvision":
        net = build_backbone(backbone, output_stride=output_stride, width_multiplier=width_multiplier, compat=compat)
    else:  # the layout the PyTorch repositories never use: ResNet checks it and its compat
        net = ResNet(BLOCKS[backbone], output_stride=output_stride, width_multiplier=width_multiplier,
                     compat=compat, layout=resnet_layout)
    return DeepLabV3Plus(net, num_classes=num_classes, output_stride=output_stride, decoder=decoder,
                         decoder_convs=decoder_convs, head_convs=head_convs, separable=separable,
                         depthwise_norm=compat != "vainf", align_corners=align_corners,
                         width_multiplier=width_multiplier, low_level_first=compat == "vainf")


# Registered builders: the same keyword options for every backbone (documented once, here).
def deeplabv3plus_resnet50(*, output_stride: int = 16, decoder: bool = True, separable: bool = False,
                           decoder_convs: int = 2, head_convs: int = 0, align_corners: bool = True,
                           num_classes: int = 21, width_multiplier: float = 1.0, compat: str = "paper",
                           resnet_layout: str = "torchvision") -> DeepLabV3Plus:
    """DeepLabv3+ with ResNet-50.

    output_stride: 16 (ASPP rates 6/12/18) or 8 (12/24/36). decoder: False gives DeepLabv3.
    separable: depthwise-separable ASPP and decoder convs (the paper's "SC"). decoder_convs: number of 3x3
    decoder convs (paper 2, VainF 1). head_convs: 3x3 convs between ASPP and the logits of DeepLabv3
    (decoder=False; paper 0, torchvision's and VainF's DeepLabHead 1). align_corners: bilinear resize mode (TF
    reference True, VainF False). num_classes: logits channels. width_multiplier: scales every channel count
    (narrow test variants). compat: "paper", "vainf" or "jfzhang95": reproduce that PyTorch repository's
    computation (set by loading its checkpoints; "vainf" with separable also drops the BN and ReLU after each
    depthwise conv, as its --separable_conv). resnet_layout: "torchvision" (every PyTorch checkpoint) or
    "tf_beta" (the paper's TF resnet_v1_beta: three 3x3 stem convs, stride in the last unit of each block;
    ResNet builders only).
    """
    return _build("resnet50", **locals())


def deeplabv3plus_resnet101(*, output_stride: int = 16, decoder: bool = True, separable: bool = False,
                            decoder_convs: int = 2, head_convs: int = 0, align_corners: bool = True,
                            num_classes: int = 21, width_multiplier: float = 1.0, compat: str = "paper",
                            resnet_layout: str = "torchvision") -> DeepLabV3Plus:
    """DeepLabv3+ with ResNet-101 (options as deeplabv3plus_resnet50)."""
    return _build("resnet101", **locals())


def deeplabv3plus_xception65(*, output_stride: int = 16, decoder: bool = True, separable: bool = True,
                             decoder_convs: int = 2, head_convs: int = 0, align_corners: bool = True,
                             num_classes: int = 21, width_multiplier: float = 1.0,
                             compat: str = "paper") -> DeepLabV3Plus:
    """DeepLabv3+ with modified aligned Xception-65; separable ("SC") by default as the TF reference trains it
    (options as deeplabv3plus_resnet50)."""
    return _build("xception65", **locals())


def deeplabv3plus_mobilenetv2(*, output_stride: int = 16, decoder: bool = True, separable: bool = False,
                              decoder_convs: int = 2, head_convs: int = 0, align_corners: bool = True,
                              num_classes: int = 21, width_multiplier: float = 1.0,
                             compat: str = "paper") -> DeepLabV3Plus:
    """DeepLabv3+ with MobileNetV2 (options as deeplabv3plus_resnet50)."""
    return _build("mobilenetv2", **locals())


_FORMATS_RESNET = ("vainf_deeplabv3plus", "jfzhang95_deeplab", "torchvision_resnet")
_VARIANTS = (
    (deeplabv3plus_resnet50, "ResNet-50", _FORMATS_RESNET, ("deeplabv3plus",)),
    (deeplabv3plus_resnet101, "ResNet-101", _FORMATS_RESNET, ()),
    (deeplabv3plus_xception65, "modified aligned Xception-65", ("jfzhang95_deeplab",), ()),
    (deeplabv3plus_mobilenetv2, "MobileNetV2",
     ("vainf_deeplabv3plus", "jfzhang95_deeplab", "torchvision_mobilenet_v2"), ()),
)

for _builder, _backbone, _formats, _aliases in _VARIANTS:
    register_model(
        ModelSpec(
            name=_builder.__name__,
            task="segmentation",
            builder=_builder,
            input_size=(513, 513),
            num_classes=21,
            preprocessing=IMAGENET,
            paper=PAPER,
            description=f"DeepLabv3+ ({_backbone} backbone, ASPP + decoder), PASCAL VOC 21 classes",
            output_names=("output",),
            checkpoint_formats=_formats,
        ),
        aliases=_aliases,
    )


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint formats. Each maps a repository's keys onto this module's by renaming (no tensor is changed) and
# returns the builder options that reproduce the repository's computation. Keys it does not know pass through
# unchanged, so a strict load names them in the repository's own terms.

VAINF_SOURCE = "VainF/DeepLabV3Plus-Pytorch"
JFZHANG95_SOURCE = "jfzhang95/pytorch-deeplab-xception"


def _tensors(obj: Any, wrapper: str, marker: str) -> StateDict | None:
    """The state_dict under `wrapper` (or `obj` itself) when it holds the key `marker`, without `module.`."""
    state = obj.get(wrapper, obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        return None
    state = {str(k).removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return state if marker in state else None


Replacement = str | Callable[[re.Match[str]], str]


def _apply(state: StateDict, rules: Sequence[tuple[str, Replacement]]) -> StateDict:
    """Rename each key by the first matching (pattern, replacement) rule; keys no rule matches are kept."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in compiled:
            if pattern.match(key):
                key = pattern.sub(replacement, key, count=1)
                break
        renamed[key] = value
    return renamed


def _vainf_rules(plus: bool, separable: bool) -> list[tuple[str, Replacement]]:
    """VainF's keys: classifier = DeepLabHeadV3Plus (project, aspp, classifier = [3x3 conv, BN, ReLU, 1x1]) or
    DeepLabHead (classifier = [ASPP, 3x3 conv, BN, ReLU, 1x1]). --separable_conv (convert_to_separable_conv)
    replaces each 3x3 conv by `body` = [depthwise, pointwise], the BN after it unchanged."""
    aspp = r"classifier\.aspp\." if plus else r"classifier\.classifier\.0\."
    conv, bn, logits = (0, 1, 3) if plus else (1, 2, 4)
    target = "decoder.convs.0" if plus else "head.0"
    rules: list[tuple[str, Replacement]] = [
        # features[0:4] and features[4:-1]: slicing an nn.Sequential keeps the children's names, so the keys run
        # low_level_features.0-3 and high_level_features.4-17, the indices of features itself.
        (r"^backbone\.(low|high)_level_features\.", "backbone.features."),
    ]
    if separable:
        rules += [(rf"^{aspp}convs\.([123])\.0\.body\.0\.", r"aspp.convs.\1.depthwise."),
                  (rf"^{aspp}convs\.([123])\.0\.body\.1\.", r"aspp.convs.\1.pointwise."),
                  (rf"^{aspp}convs\.([123])\.1\.", r"aspp.convs.\1.pointwise_bn."),
                  (rf"^classifier\.classifier\.{conv}\.body\.0\.", f"{target}.depthwise."),
                  (rf"^classifier\.classifier\.{conv}\.body\.1\.", f"{target}.pointwise."),
                  (rf"^classifier\.classifier\.{bn}\.", f"{target}.pointwise_bn.")]
    else:
        rules += [(rf"^classifier\.classifier\.{conv}\.", f"{target}.0."),
                  (rf"^classifier\.classifier\.{bn}\.", f"{target}.1.")]
    return [*rules, (rf"^{aspp}", "aspp."), (r"^classifier\.project\.", "decoder.project."),
            (rf"^classifier\.classifier\.{logits}\.", "classifier.")]


def vainf_deeplabv3plus(obj: Any) -> Converted | None:
    """VainF/DeepLabV3Plus-Pytorch: ckpt['model_state'] of its deeplabv3plus_* (one decoder 3x3 conv) or
    deeplabv3_* (DeepLabHead: one 3x3 conv after ASPP) models, dense or --separable_conv; align_corners=False."""
    plus = True
    state = _tensors(obj, "model_state", "classifier.aspp.project.0.weight")
    if state is None:
        plus = False
        state = _tensors(obj, "model_state", "classifier.classifier.0.project.0.weight")
        if state is None:
            return None
    separable = any(".body." in key for key in state)
    options: dict[str, Any] = {"decoder": plus, **({"decoder_convs": 1} if plus else {"head_convs": 1}),
                               "separable": separable, "align_corners": False, "compat": "vainf"}
    logits = state.get(f"classifier.classifier.{3 if plus else 4}.weight")
    if logits is not None:
        options["num_classes"] = int(logits.shape[0])
    return Converted(_apply(state, _vainf_rules(plus, separable)), options,
                     source=VAINF_SOURCE, unrecorded=("output_stride",))


def _minus(offset: int, template: str) -> Callable[[re.Match[str]], str]:
    """A replacement that renumbers group 1 by -offset (ASPP branches 1-4 -> 0-3, exit convs 3-5 -> 0-2)."""
    return lambda m: template.format(int(m.group(1)) - offset)


_SEPARABLE = {"conv1": "depthwise", "bn": "depthwise_bn", "pointwise": "pointwise"}
_MOBILENET_PLAIN = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}  # features.1: no expansion conv
_MOBILENET_EXPANDED = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}

_JFZHANG95_RULES: tuple[tuple[str, Replacement], ...] = (
    # Xception: rep = [ReLU,] sep, BN, ReLU, sep, BN, ReLU, sep, BN; a leading ReLU shifts indices by one,
    # so index // 3 numbers the separable convs and (index - 1) // 3 the BNs after them, in both versions.
    (r"^(backbone\.block\d+)\.rep\.(\d+)\.(conv1|bn|pointwise)\.",
     lambda m: f"{m.group(1)}.convs.{int(m.group(2)) // 3}.{_SEPARABLE[m.group(3)]}."),
    (r"^(backbone\.block\d+)\.rep\.(\d+)\.",
     lambda m: f"{m.group(1)}.convs.{(int(m.group(2)) - 1) // 3}.pointwise_bn."),
    (r"^backbone\.block(\d+)\.skipbn\.", r"backbone.block\1.skip_bn."),
    (r"^backbone\.conv([345])\.conv1\.", _minus(3, "backbone.block21.convs.{}.depthwise.")),
    (r"^backbone\.conv([345])\.bn\.", _minus(3, "backbone.block21.convs.{}.depthwise_bn.")),
    (r"^backbone\.conv([345])\.pointwise\.", _minus(3, "backbone.block21.convs.{}.pointwise.")),
    (r"^backbone\.bn([345])\.", _minus(3, "backbone.block21.convs.{}.pointwise_bn.")),
    # MobileNetV2: flat conv Sequentials there, nested (torchvision) here.
    (r"^backbone\.features\.1\.conv\.([0134])\.",
     lambda m: f"backbone.features.1.conv.{_MOBILENET_PLAIN[m.group(1)]}."),
    (r"^backbone\.features\.(\d+)\.conv\.([013467])\.",
     lambda m: f"backbone.features.{m.group(1)}.conv.{_MOBILENET_EXPANDED[m.group(2)]}."),
    (r"^aspp\.aspp([1-4])\.atrous_conv\.", _minus(1, "aspp.convs.{}.0.")),
    (r"^aspp\.aspp([1-4])\.bn\.", _minus(1, "aspp.convs.{}.1.")),
    (r"^aspp\.global_avg_pool\.", "aspp.convs.4."),
    (r"^aspp\.conv1\.", "aspp.project.0."),
    (r"^aspp\.bn1\.", "aspp.project.1."),
    (r"^decoder\.conv1\.", "decoder.project.0."),
    (r"^decoder\.bn1\.", "decoder.project.1."),
)


def _jfzhang95_decoder_rules(state: StateDict) -> list[tuple[str, Replacement]]:
    """decoder.last_conv = conv, BN, ReLU, [Dropout,] conv, BN, ReLU, [Dropout,] conv: later versions have the
    dropouts, which shifts the indices."""
    conv1, bn1, conv2, bn2, logits = (0, 1, 4, 5, 8) if "decoder.last_conv.8.weight" in state else (0, 1, 3, 4, 6)
    return [(rf"^decoder\.last_conv\.{i}\.", new) for i, new in (
        (conv1, "decoder.convs.0.0."), (bn1, "decoder.convs.0.1."), (conv2, "decoder.convs.1.0."),
        (bn2, "decoder.convs.1.1."), (logits, "classifier."))]


def jfzhang95_deeplab(obj: Any) -> Converted | None:
    """jfzhang95/pytorch-deeplab-xception: ckpt['state_dict'], two decoder 3x3 convs, align_corners=True."""
    state = _tensors(obj, "state_dict", "aspp.aspp1.atrous_conv.weight")
    if state is None:
        return None
    # MobileNetV2's low/high_level_features are aliases of backbone.features: keep one copy.
    state = {k: v for k, v in state.items() if not re.match(r"^backbone\.(low|high)_level_features\.", k)}
    state = _apply(state, (*_JFZHANG95_RULES, *_jfzhang95_decoder_rules(state)))
    options: dict[str, Any] = {"decoder": True, "decoder_convs": 2, "separable": False, "align_corners": True,
                               "compat": "jfzhang95"}
    if "classifier.weight" in state:
        options["num_classes"] = int(state["classifier.weight"].shape[0])
    return Converted(state, options, source=JFZHANG95_SOURCE, unrecorded=("output_stride",))


def torchvision_resnet(obj: Any) -> Converted | None:
    """torchvision ImageNet ResNet weights: the backbone only (fc dropped); the head stays random."""
    state = _tensors(obj, "state_dict", "layer1.0.conv1.weight")
    if state is None or "conv1.weight" not in state:
        return None
    backbone = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    return Converted(backbone, {}, source="torchvision ResNet ImageNet weights (backbone only: ASPP, decoder "
                                          "and classifier stay random)")


def torchvision_mobilenet_v2(obj: Any) -> Converted | None:
    """torchvision ImageNet MobileNetV2 weights: features.0-17 (the 1280-channel conv and classifier dropped)."""
    state = _tensors(obj, "state_dict", "features.0.0.weight")
    if state is None or "features.1.conv.0.0.weight" not in state:
        return None
    backbone = {f"backbone.{k}": v for k, v in state.items()
                if k.startswith("features.") and not k.startswith("features.18.")}
    return Converted(backbone, {}, source="torchvision MobileNetV2 ImageNet weights (backbone only: ASPP, "
                                          "decoder and classifier stay random)")


for _fn in (vainf_deeplabv3plus, jfzhang95_deeplab, torchvision_resnet, torchvision_mobilenet_v2):
    register_checkpoint_format(_fn.__name__, _fn)
