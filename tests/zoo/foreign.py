"""Other repositories' module structures, written for the tests from what their code builds.

Each class reproduces the module tree (hence the state_dict key names), the layer order, padding, dilation and
resize modes of one repository's model, so deploykit's checkpoint formats are checked against the structure
that saved the checkpoint rather than against deploykit's own renaming. No code is copied; each class names the
file it describes. `ch` scales channel counts (identity at full size) so the VGG models stay small in tests.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Ch = Callable[[int], int]


def full(c: int) -> int:
    return c


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere and non-trivial BatchNorm statistics, so a mis-mapped tensor shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight.shape[0]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
    return module.eval()


def conv_bn(cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0, dilation: int = 1,
            groups: int = 1, act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding, dilation=dilation, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --- torchvision/models/resnet.py -----------------------------------------------------------------------------

class TvBottleneck(nn.Module):
    """conv1 1x1, conv2 3x3 (stride here, padding = dilation), conv3 1x1 x4, optional downsample (conv, BN)."""

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class TvResNet(nn.Module):
    """torchvision ResNet; replace_stride_with_dilation turns a stage's stride into dilation, the stage's
    first block keeping the previous rate."""

    def __init__(self, layers: Sequence[int], dilate: Sequence[bool] = (False, False, False)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, dilation = 64, 1
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            previous = dilation
            if i > 0 and dilate[i - 1]:
                dilation, stride = dilation * stride, 1
            blocks = [TvBottleneck(cin, planes, stride, previous, _downsample(cin, planes * 4, stride))]
            blocks += [TvBottleneck(planes * 4, planes, 1, dilation, None) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = planes * 4
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, 1000)


class IntermediateLayers(nn.ModuleDict):
    """torchvision's IntermediateLayerGetter (VainF copies it): the children up to the last returned one, run
    in order; a dict of the returned ones."""

    def __init__(self, model: nn.Module, returned: dict[str, str]) -> None:
        children: OrderedDict[str, nn.Module] = OrderedDict()
        wanted = set(returned)
        for name, child in model.named_children():
            children[name] = child
            wanted.discard(name)
            if not wanted:
                break
        super().__init__(children)
        self.returned = returned

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, child in self.items():
            x = child(x)
            if name in self.returned:
                out[self.returned[name]] = x
        return out


# --- VainF/DeepLabV3Plus-Pytorch: network/backbone/mobilenetv2.py, network/_deeplab.py, network/modeling.py ---

def vainf_fixed_padding(dilation: int) -> tuple[int, int, int, int]:
    pad = 2 * dilation  # effective 3x3 kernel size minus one
    return (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)


class VainfInvertedResidual(nn.Module):
    """conv = [ConvBNReLU 1x1 (when expanding),] ConvBNReLU 3x3 depthwise (padding 0), Conv 1x1, BN; the block
    input is zero-padded (fixed_padding) before everything."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if t != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.input_padding = vainf_fixed_padding(dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.pad(x, self.input_padding))
        return x + out if self.residual else out


MOBILENET_V2_PLAN = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1))


def vainf_mobilenet_features(output_stride: int) -> nn.Sequential:
    """MobileNetV2.features: stem ConvBNReLU (padding 0!), 17 inverted residuals, the 1280-channel 1x1 conv.
    Once the output stride is reached a stage's stride becomes dilation; its first block keeps the old rate."""
    features: list[nn.Module] = [conv_bn(3, 32, 3, stride=2, act=nn.ReLU6)]
    cin, current, dilation = 32, 2, 1
    for t, c, n, s in MOBILENET_V2_PLAN:
        previous = dilation
        if current == output_stride:
            stride, dilation = 1, dilation * s
        else:
            stride, current = s, current * s
        for i in range(n):
            features.append(VainfInvertedResidual(cin, c, stride if i == 0 else 1, previous if i == 0 else dilation, t))
            cin = c
    features.append(conv_bn(cin, 1280, 1, act=nn.ReLU6))
    return nn.Sequential(*features)


class VainfMobileNetBackbone(nn.Module):
    """_segm_mobilenet: low_level_features = features[0:4], high_level_features = features[4:-1]; features and
    classifier set to None (so absent from the state_dict). Slicing keeps the children's names 0-3 and 4-17."""

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        features = vainf_mobilenet_features(output_stride)
        self.low_level_features = features[0:4]
        self.high_level_features = features[4:-1]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.low_level_features(x)
        return {"low_level": low, "out": self.high_level_features(low)}


class VainfASPPPooling(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class VainfASPP(nn.Module):
    """convs: [1x1 Seq(conv, BN, ReLU), 3 x ASPPConv Seq(conv 3x3 dilated, BN, ReLU), ASPPPooling Seq(pool,
    conv, BN, ReLU)]; project Seq(conv 1x1, BN, ReLU, Dropout)."""

    def __init__(self, cin: int, rates: Sequence[int]) -> None:
        super().__init__()
        branches: list[nn.Module] = [conv_bn(cin, 256, 1)]
        branches += [conv_bn(cin, 256, 3, padding=r, dilation=r) for r in rates]
        branches.append(VainfASPPPooling(nn.AdaptiveAvgPool2d(1), *conv_bn(cin, 256, 1)))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*conv_bn(5 * 256, 256, 1), nn.Dropout(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class VainfHeadV3Plus(nn.Module):
    """DeepLabHeadV3Plus: project (low-level -> 48), aspp, classifier Seq(conv 3x3 304->256, BN, ReLU, conv 1x1);
    concat [low-level, ASPP]; align_corners=False."""

    def __init__(self, cin: int, low_channels: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.project = conv_bn(low_channels, 48, 1)
        self.aspp = VainfASPP(cin, rates)
        self.classifier = nn.Sequential(*conv_bn(304, 256, 3, padding=1), nn.Conv2d(256, num_classes, 1))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.project(features["low_level"])
        out = F.interpolate(self.aspp(features["out"]), size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, out], dim=1))


class VainfHeadV3(nn.Module):
    """DeepLabHead (deeplabv3_*): classifier Seq(ASPP, conv 3x3 256->256, BN, ReLU, conv 1x1); no decoder."""

    def __init__(self, cin: int, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.classifier = nn.Sequential(VainfASPP(cin, rates), *conv_bn(256, 256, 3, padding=1),
                                        nn.Conv2d(256, num_classes, 1))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(features["out"])


class VainfSeparable(nn.Module):
    """AtrousSeparableConvolution: body Seq(depthwise kxk with the replaced conv's stride/padding/dilation and
    bias, pointwise 1x1); no BN or activation between them."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        bias = conv.bias is not None
        self.body = nn.Sequential(
            nn.Conv2d(conv.in_channels, conv.in_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                      conv.dilation, groups=conv.in_channels, bias=bias),
            nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def vainf_separable(module: nn.Module) -> nn.Module:
    """convert_to_separable_conv (main.py --separable_conv, applied to model.classifier): every conv with a
    kernel larger than 1 becomes a VainfSeparable, in place, children first."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.kernel_size[0] > 1:
            setattr(module, name, VainfSeparable(child))
        else:
            vainf_separable(child)
    return module


class VainfDeepLab(nn.Module):
    """modeling.deeplabv3plus_{mobilenet,resnet50,resnet101} (backbone + DeepLabHeadV3Plus) or, with
    plus=False, modeling.deeplabv3_* (DeepLabHead, the backbone's "out" only); logits resized to the input with
    align_corners=False. separable: main.py's --separable_conv."""

    def __init__(self, backbone: str, num_classes: int = 21, output_stride: int = 16, *, plus: bool = True,
                 separable: bool = False) -> None:
        super().__init__()
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.backbone: nn.Module
        cin, low = (320, 24) if backbone == "mobilenet" else (2048, 256)
        if backbone == "mobilenet":
            self.backbone = VainfMobileNetBackbone(output_stride)
        else:
            dilate = (False, False, True) if output_stride == 16 else (False, True, True)
            resnet = TvResNet({"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}[backbone], dilate)
            self.backbone = IntermediateLayers(resnet, {"layer4": "out", "layer1": "low_level"})
        self.classifier = VainfHeadV3Plus(cin, low, num_classes, rates) if plus else VainfHeadV3(cin, num_classes,
                                                                                                 rates)
        if separable:
            vainf_separable(self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.backbone(x))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


# --- jfzhang95/pytorch-deeplab-xception: modeling/backbone/resnet.py, aspp.py, decoder.py, deeplab.py ----------

class JfResNet(nn.Module):
    """ResNet-101 with strides/dilations per output stride (16: (1,2,2,1)/(1,1,1,2)) and a multi-grid layer4
    of three blocks at rates (1, 2, 4) x the stage rate; Bottleneck keys as torchvision's. Returns (x, layer1)."""

    def __init__(self, output_stride: int = 16) -> None:
        super().__init__()
        strides, dilations = ((1, 2, 2, 1), (1, 1, 1, 2)) if output_stride == 16 else ((1, 2, 1, 1), (1, 1, 2, 4))
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256), (3, 4, 23), strict=True)):
            s, d = strides[i], dilations[i]
            blocks = [TvBottleneck(cin, planes, s, d, _downsample(cin, planes * 4, s))]
            blocks += [TvBottleneck(planes * 4, planes, 1, d, None) for _ in range(1, n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = planes * 4
        s, d = strides[3], dilations[3]
        self.layer4 = nn.Sequential(TvBottleneck(cin, 512, s, d, _downsample(cin, 2048, s)),
                                    *(TvBottleneck(2048, 512, 1, g * d, None) for g in (2, 4)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return self.layer4(self.layer3(self.layer2(low))), low


class JfInvertedResidual(nn.Module):
    """modeling/backbone/mobilenet.py: conv is one flat Sequential ([pw conv, BN, ReLU6,] dw conv (padding 0),
    BN, ReLU6, pw-linear conv, BN); the block input is zero-padded by the dilation (fixed_padding)."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int, t: int) -> None:
        super().__init__()
        hidden = round(cin * t)
        layers: list[nn.Module] = [*conv_bn(cin, hidden, 1, act=nn.ReLU6)] if t != 1 else []
        layers += [*conv_bn(hidden, hidden, 3, stride=stride, dilation=dilation, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout
        self.dilation = dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.pad(x, [self.dilation] * 4))
        return x + out if self.residual else out


class JfMobileNetV2(nn.Module):
    """features: stem conv_bn (3x3 s2 padding 1, BN, ReLU6) + 17 blocks (no 1280 conv); once the output stride
    is reached a stage runs all its blocks at the previous rate. low_level_features = features[0:4] and
    high_level_features = features[4:] are registered too: the state_dict holds every tensor twice."""

    def __init__(self, output_stride: int = 16) -> None:
        super().__init__()
        blocks: list[nn.Module] = [conv_bn(3, 32, 3, stride=2, padding=1, act=nn.ReLU6)]
        cin, current, rate = 32, 2, 1
        for t, c, n, s in MOBILENET_V2_PLAN:
            if current == output_stride:
                stride, dilation, rate = 1, rate, rate * s
            else:
                stride, dilation, current = s, 1, current * s
            for i in range(n):
                blocks.append(JfInvertedResidual(cin, c, stride if i == 0 else 1, dilation, t))
                cin = c
        self.features = nn.Sequential(*blocks)
        self.low_level_features = self.features[0:4]
        self.high_level_features = self.features[4:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low_level_features(x)
        return self.high_level_features(low), low


class JfASPPModule(nn.Module):
    def __init__(self, cin: int, k: int, rate: int) -> None:
        super().__init__()
        self.atrous_conv = nn.Conv2d(cin, 256, k, padding=0 if k == 1 else rate, dilation=rate, bias=False)
        self.bn = nn.BatchNorm2d(256)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class JfASPP(nn.Module):
    """aspp1 (1x1), aspp2-4 (3x3 at 6/12/18), global_avg_pool Seq(pool, conv, BN, ReLU) resized with
    align_corners=True, conv1 + bn1 + relu + dropout."""

    def __init__(self, cin: int = 2048) -> None:
        super().__init__()
        self.aspp1 = JfASPPModule(cin, 1, 1)
        self.aspp2, self.aspp3, self.aspp4 = (JfASPPModule(cin, 3, r) for r in (6, 12, 18))
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), *conv_bn(cin, 256, 1))
        self.conv1 = nn.Conv2d(1280, 256, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(256)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.global_avg_pool(x), size=x.shape[2:], mode="bilinear", align_corners=True)
        parts = [self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled]
        return self.dropout(self.relu(self.bn1(self.conv1(torch.cat(parts, dim=1)))))


class JfDecoder(nn.Module):
    """conv1/bn1 (low-level -> 48), last_conv = conv, BN, ReLU, Dropout, conv, BN, ReLU, Dropout, conv 1x1;
    concat [ASPP resized (align_corners=True), low-level]."""

    def __init__(self, num_classes: int, low_channels: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(low_channels, 48, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(48)
        self.relu = nn.ReLU()
        self.last_conv = nn.Sequential(*conv_bn(304, 256, 3, padding=1), nn.Dropout(0.5),
                                       *conv_bn(256, 256, 3, padding=1), nn.Dropout(0.1),
                                       nn.Conv2d(256, num_classes, 1))

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.relu(self.bn1(self.conv1(low)))
        x = F.interpolate(x, size=low.shape[2:], mode="bilinear", align_corners=True)
        return self.last_conv(torch.cat([x, low], dim=1))


class JfDeepLab(nn.Module):
    """DeepLab(backbone='resnet' or 'mobilenet'): backbone, aspp, decoder; logits resized with
    align_corners=True."""

    def __init__(self, num_classes: int = 21, output_stride: int = 16, backbone: str = "resnet") -> None:
        super().__init__()
        mobilenet = backbone == "mobilenet"
        self.backbone: nn.Module = JfMobileNetV2(output_stride) if mobilenet else JfResNet(output_stride)
        self.aspp = JfASPP(320 if mobilenet else 2048)
        self.decoder = JfDecoder(num_classes, 24 if mobilenet else 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, low = self.backbone(x)
        out = self.decoder(self.aspp(features), low)
        return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=True)


# --- torchvision/models/mobilenetv2.py (VGG: tests/zoo/foreign_vgg.py) ------------------------------------

class TvInvertedResidual(nn.Module):
    """conv = [Conv2dNormActivation 1x1,] Conv2dNormActivation 3x3 depthwise (padding 1), Conv 1x1, BN."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if t != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class TvMobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        features: list[nn.Module] = [conv_bn(3, 32, 3, stride=2, padding=1, act=nn.ReLU6)]
        cin = 32
        for t, c, n, s in MOBILENET_V2_PLAN:
            for i in range(n):
                features.append(TvInvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(conv_bn(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))
