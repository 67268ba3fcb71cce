"""DeconvNet: Noh, Hong & Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015.

Encoder: the 13 VGG16 convolutions, each followed by batch normalisation and ReLU, and five 2x2/2 max-pools
whose switches (the position of each window's maximum) are kept; fc6 as a 7x7 valid convolution to 4096
channels and fc7 as a 1x1 convolution, both with BN+ReLU. Decoder, the mirror image: fc6-deconv (a 7x7
transposed convolution back to 512 channels), then five unpoolings driven by the switches, each followed by
3x3 deconvolutions with BN+ReLU (512x3 at 1/16, 512,512,256 at 1/8, 256,256,128 at 1/4, 128,64 at 1/2,
64,64 at full size), and a 1x1 classifier to 21 classes. Module names follow the Caffe layers: Caffe
`conv1_1`/`bn1_1` are `conv1.conv1_1.conv`/`.bn`, `debn5_1` is `deconv5.deconv5_1.bn`, `fc6-deconv` is
`fc6_deconv`, `seg-score` is `seg_score`.

Unpooling (option `unpool`):
- "mask" (default): the switches are a 0/1 mask with exactly one 1 per pooling window, at the window's
  first maximum in row-major order, which is the element PyTorch's max_pool2d index points to (its CPU and
  CUDA kernels only replace the running maximum on a strictly greater value). Unpooling is then a broadcast
  multiply of the decoder feature with the mask, and a zero pad for the rows/columns a floor-mode pool drops.
  It exports (TorchScript exporter) with MaxPool without Indices, Reshape, ReduceMax, Equal, Cast, Mul,
  ReduceSum and Less, plus Slice and Pad when traced at a size that leaves pooling remainders; never
  MaxUnpool nor a MaxPool `Indices` output, which TensorRT's ONNX parser does not support. Outputs equal the
  "indices" model's exactly on finite inputs (windows holding NaN differ: PyTorch points at the NaN, the
  mask has no 1 there). As with any switch unpooling, two runtimes can disagree where a window's two
  largest values lie within float rounding of each other: the value then lands one pixel apart.
- "indices": nn.MaxPool2d(return_indices=True) + nn.MaxUnpool2d, the PyTorch reference. It exports only with
  the dynamo exporter (as ScatterND, still fed by a MaxPool with an Indices output);
  deploykit.graph.unpool.rewrite_unpooling turns that graph into one TensorRT parses.
Both modes have the same state_dict, so weights move freely between them.

Deviations from the Caffe reference (HyeonwooNoh/DeconvNet):
- Caffe pools round up (ceil mode); PyTorch's and this model's round down. At the sizes DeconvNet runs at
  (multiples of 32) the two agree.
- The reference's BN layers were frozen into a per-channel scale and shift after training (variance epsilon
  1e-9); here they are BatchNorm2d with PyTorch's epsilon 1e-5. A converted Caffe model loads into
  BatchNorm2d as weight/bias = that scale/shift, running_mean 0, running_var 1 - eps.
- `seg-score` is a 1x1 layer; here it is a Conv2d.
- Preprocessing: the Caffe reference, like the VGG Caffe models it starts from, takes BGR pixels in 0-255
  minus the ImageNet per-channel mean (about 104.0, 116.7, 122.7 for B, G, R) with no scaling. deploykit's
  DeconvNet uses torchvision's ImageNet preprocessing (RGB in 0-1, mean 0.485/0.456/0.406, std
  0.229/0.224/0.225), which is what PyTorch trainings initialised from torchvision's vgg16_bn use.
- Noh et al. segment object proposals and ensemble with FCN (EDeconvNet, CRF); only the network is here.

Sizes: height and width at least 32 * fc_kernel (224 by default: fc6 is a valid 7x7 convolution on the
1/32 map), multiples of 32 (size_multiple). PyTorch handles other sizes too; an ONNX graph traced at a
multiple of 32 has no remainder handling and rejects such sizes loudly (Reshape fails).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.errors import CheckpointError, ExportError, InputError
from deploykit.zoo._registry import IMAGENET, ModelSpec, register_model
from deploykit.zoo.checkpoints import Converted, plain_state_dict, register_checkpoint_format

Unpool = Literal["mask", "indices"]

# (stage name, output channels of each conv): VGG16's conv blocks.
ENCODER: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("conv1", (64, 64)),
    ("conv2", (128, 128)),
    ("conv3", (256, 256, 256)),
    ("conv4", (512, 512, 512)),
    ("conv5", (512, 512, 512)),
)
# The decoder, deepest first: each stage follows one unpooling.
DECODER: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("deconv5", (512, 512, 512)),
    ("deconv4", (512, 512, 256)),
    ("deconv3", (256, 256, 128)),
    ("deconv2", (128, 64)),
    ("deconv1", (64, 64)),
)
FC_WIDTH = 4096


class ConvBNReLU(nn.Sequential):
    """Convolution (or transposed convolution, as Caffe's Deconvolution) + BatchNorm + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int, *, transposed: bool = False) -> None:
        conv_type = nn.ConvTranspose2d if transposed else nn.Conv2d
        super().__init__(OrderedDict(
            conv=conv_type(cin, cout, kernel, padding=padding),
            bn=nn.BatchNorm2d(cout),
            relu=nn.ReLU(inplace=True),
        ))


class MaskMaxPool2d(nn.Module):
    """2x2/2 floor-mode max pooling that returns (pooled, switches) with switches as a 0/1 mask.

    The mask has shape (N, C, H//2, 2, W//2, 2): the input (less a floor-mode remainder row/column) split
    into its windows, with a 1 at each window's first maximum in row-major order (PyTorch's argmax) and 0
    elsewhere. It is computed from the input alone (window maximum by ReduceMax), so a quantizer that
    touches the MaxPool cannot make the comparison miss.
    """

    priority: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # Window positions weighted 8, 4, 2, 1 in row-major order: a position is the first maximum exactly
        # when it is a maximum and the weighted count of maxima in its window is below twice its own weight
        # (no earlier position, whose weights are multiples of that, is a maximum). Small integers: exact
        # in float16 and TF32 alike.
        weights = torch.tensor([[8.0, 4.0], [2.0, 1.0]]).view(1, 1, 1, 2, 1, 2)
        self.register_buffer("priority", weights, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = F.max_pool2d(x, 2, 2)
        n, c, h, w = pooled.shape
        # Explicit reshapes from the pooled shape: unflatten's exported shape arithmetic (Mod/Slice chains)
        # makes symbolic shape inference (onnxslim) blow up over five nested pools. The remainder crop is
        # decided when tracing: an export at multiples of 32 has none, and then rejects odd sizes loudly
        # (Reshape fails) instead of mis-placing values.
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            x = x[:, :, : 2 * h, : 2 * w]
        windows = x.reshape(n, c, h, 2, w, 2)
        priority = self.priority.to(x.dtype)
        is_max = (windows == windows.amax(dim=(3, 5), keepdim=True)).to(x.dtype)
        earlier = (is_max * priority).sum(dim=(3, 5), keepdim=True)
        return pooled, is_max * (earlier < 2 * priority).to(x.dtype)


class MaskMaxUnpool2d(nn.Module):
    """Inverse of MaskMaxPool2d: each value goes to its window's switch, zeros elsewhere and in the
    rows/columns a floor-mode pool dropped (as nn.MaxUnpool2d with output_size)."""

    def forward(self, y: torch.Tensor, switches: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        n, c, h, w = y.shape
        out = (y.reshape(n, c, h, 1, w, 1) * switches).reshape(n, c, 2 * h, 2 * w)
        if size[-2] % 2 or size[-1] % 2:  # decided when tracing, like the crop in MaskMaxPool2d
            out = F.pad(out, (0, size[-1] - 2 * w, 0, size[-2] - 2 * h))
        return out


class IndicesMaxPool2d(nn.MaxPool2d):
    """The PyTorch reference: 2x2/2 max pooling returning (pooled, flat indices per plane)."""

    def __init__(self) -> None:
        super().__init__(2, 2, return_indices=True)


class IndicesMaxUnpool2d(nn.MaxUnpool2d):
    """The PyTorch reference unpooling. Refuses the TorchScript exporter, which cannot export it."""

    def __init__(self) -> None:
        super().__init__(2, 2)

    def forward(  # type: ignore[override]
        self, y: torch.Tensor, switches: torch.Tensor, size: Sequence[int]
    ) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise ExportError(
                "DeconvNet with unpool='indices' (nn.MaxUnpool2d) exports only with the dynamo exporter, and "
                "its graph is not TensorRT-ready; use the default unpool='mask' or --exporter dynamo"
            )
        return F.max_unpool2d(y, switches, (2, 2), (2, 2), output_size=list(size[-2:]))


def _stage(names: str, widths: Sequence[int], cin: int, divisor: int, transposed: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, width in enumerate(widths, start=1):
        cout = max(1, width // divisor)
        layers[f"{names}_{i}"] = ConvBNReLU(cin, cout, 3, 1, transposed=transposed)
        cin = cout
    return nn.Sequential(layers)


class DeconvNet(nn.Module):
    def __init__(self, *, num_classes: int = 21, unpool: Unpool = "mask", width_divisor: int = 1,
                 fc_kernel: int = 7) -> None:
        super().__init__()
        if unpool not in ("mask", "indices"):
            raise ValueError(f"unpool must be 'mask' or 'indices', not {unpool!r}")
        if width_divisor < 1 or fc_kernel < 1 or num_classes < 1:
            raise ValueError("num_classes, width_divisor and fc_kernel must be positive integers")
        self.unpool_mode = unpool
        cin = 3
        for name, widths in ENCODER:
            self.add_module(name, _stage(name, widths, cin, width_divisor, transposed=False))
            cin = max(1, widths[-1] // width_divisor)
        fc = max(1, FC_WIDTH // width_divisor)
        self.fc6 = ConvBNReLU(cin, fc, fc_kernel, 0)
        self.fc7 = ConvBNReLU(fc, fc, 1, 0)
        self.fc6_deconv = ConvBNReLU(fc, cin, fc_kernel, 0, transposed=True)
        for name, widths in DECODER:
            self.add_module(name, _stage(name, widths, cin, width_divisor, transposed=True))
            cin = max(1, widths[-1] // width_divisor)
        self.seg_score = nn.Conv2d(cin, num_classes, 1)
        self.pool: nn.Module = MaskMaxPool2d() if unpool == "mask" else IndicesMaxPool2d()
        self.unpool: nn.Module = MaskMaxUnpool2d() if unpool == "mask" else IndicesMaxUnpool2d()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        switches: list[tuple[torch.Tensor, Sequence[int]]] = []
        for name, _ in ENCODER:
            x = getattr(self, name)(x)
            before = x.shape[-2:]
            x, switch = self.pool(x)
            switches.append((switch, before))
        x = self.fc6_deconv(self.fc7(self.fc6(x)))
        for (name, _), (switch, size) in zip(DECODER, reversed(switches), strict=True):
            x = getattr(self, name)(self.unpool(x, switch, size))
        out: torch.Tensor = self.seg_score(x)
        return out


def deconvnet(*, num_classes: int = 21, unpool: Unpool = "mask", width_divisor: int = 1,
              fc_kernel: int = 7) -> DeconvNet:
    """DeconvNet with VGG16-BN encoder. unpool: "mask" (TensorRT-ready, default) or "indices"
    (nn.MaxUnpool2d, dynamo exporter only); width_divisor divides every width (tiny test variants);
    fc_kernel is fc6's kernel (7 in the paper; input sides must be at least 32 * fc_kernel)."""
    return DeconvNet(num_classes=num_classes, unpool=unpool, width_divisor=width_divisor, fc_kernel=fc_kernel)


def _torchvision_vgg16_bn(obj: Any) -> Converted | None:
    """torchvision's vgg16_bn ImageNet weights: the 13 conv+BN layers, and fc6/fc7 from the classifier.

    Covers the encoder only (as DeconvNet's training started); the decoder stays random, so loading needs
    --allow-partial. fc6/fc7 have BN here and not in VGG: those BN layers are reported as left random.
    """
    sd = plain_state_dict(obj)
    if sd is None or "features.0.weight" not in sd or "classifier.0.weight" not in sd:
        return None
    if "features.1.running_mean" not in sd:  # plain vgg16 (no BN) is a different network
        return None
    try:
        return _convert_vgg16_bn(sd)
    except KeyError as exc:
        raise CheckpointError(f"checkpoint looks like torchvision vgg16_bn but has no {exc}; "
                              "save it with torch.save(torchvision.models.vgg16_bn(...).state_dict(), path)") from exc


def _convert_vgg16_bn(obj: dict[str, torch.Tensor]) -> Converted:
    state: dict[str, torch.Tensor] = {}
    index = 0
    for name, widths in ENCODER:
        for i in range(1, len(widths) + 1):
            prefix = f"{name}.{name}_{i}"
            for param in ("weight", "bias"):
                state[f"{prefix}.conv.{param}"] = obj[f"features.{index}.{param}"]
            for param in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                if f"features.{index + 1}.{param}" in obj:
                    state[f"{prefix}.bn.{param}"] = obj[f"features.{index + 1}.{param}"]
            index += 3  # conv, bn, relu
        index += 1  # max-pool
    # fc6/fc7 are Linear layers over the flattened (C, 7, 7) pool5 map: the same weights as conv kernels.
    channels = int(state["conv5.conv5_3.conv.weight"].shape[0])
    fc6, fc7 = obj["classifier.0.weight"], obj["classifier.3.weight"]
    kernel = round((fc6.shape[1] / channels) ** 0.5)
    state["fc6.conv.weight"] = fc6.reshape(fc6.shape[0], channels, kernel, kernel)
    state["fc6.conv.bias"] = obj["classifier.0.bias"]
    state["fc7.conv.weight"] = fc7.reshape(*fc7.shape, 1, 1)
    state["fc7.conv.bias"] = obj["classifier.3.bias"]
    divisor = max(1, 64 // int(obj["features.0.weight"].shape[0]))
    return Converted(state, options={"width_divisor": divisor, "fc_kernel": kernel}, source="torchvision vgg16_bn")


register_checkpoint_format("deconvnet_torchvision_vgg16_bn", _torchvision_vgg16_bn)

def _size_rule(size: tuple[int, int], options: Mapping[str, Any]) -> None:
    """fc6 is a valid fc_kernel x fc_kernel convolution on the 1/32 map: smaller inputs leave it nothing."""
    minimum = 32 * int(options.get("fc_kernel", 7))
    if min(size) < minimum:
        raise InputError(f"input {size[0]}x{size[1]}: DeconvNet's fc6 (a valid {minimum // 32}x{minimum // 32} "
                         f"convolution on the 1/32 map) needs sides of at least {minimum}; use a height and width of "
                         f"at least {minimum} (multiples of 32)")


SPEC = register_model(ModelSpec(
    name="deconvnet",
    task="segmentation",
    builder=deconvnet,
    input_size=(224, 224),
    num_classes=21,
    preprocessing=IMAGENET,
    paper="Noh, Hong & Han, Learning Deconvolution Network for Semantic Segmentation, ICCV 2015 "
          "(arXiv 1505.04366)",
    description="VGG16-BN encoder, fc6/fc7 as convs, mirrored deconvolution decoder with switch unpooling "
                "(TensorRT-ready mask formulation by default)",
    checkpoint_formats=("state_dict", "deconvnet_torchvision_vgg16_bn"),
    size_multiple=32,
    size_rule=_size_rule,
    exporter="torchscript",
))
