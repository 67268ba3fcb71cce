"""Building blocks shared by the zoo's architectures: conv-BN-ReLU, separable conv, ASPP, resizing (torch, TF1).

Every module here is written for export: no Python-side shape arithmetic that would freeze an input size into
the ONNX graph. Resizing always targets the runtime shape of another tensor, and image pooling is
AdaptiveAvgPool2d(1) (ONNX GlobalAveragePool), so exports with dynamic height and width stay correct.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def resize_to(x: torch.Tensor, size: Sequence[int] | torch.Size, align_corners: bool) -> torch.Tensor:
    """Bilinear resize of NCHW `x` to `size` (height, width), e.g. `other.shape[-2:]`.

    Pass sizes taken from tensors' shapes, not Python ints computed from the input size: traced through the
    TorchScript exporter they stay symbolic (Shape -> Slice -> Resize), so the graph resizes to the runtime size.
    """
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU, as a Sequential so state_dict keys are `0.*` and `1.*`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, *, stride: int = 1,
                 dilation: int = 1, padding: int | None = None) -> None:
        pad = dilation * (kernel_size - 1) // 2 if padding is None else padding
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=pad, dilation=dilation,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConv2d(nn.Module):
    """Depthwise kxk -> BN [-> ReLU] -> pointwise 1x1 -> BN [-> ReLU] (DeepLabv3+, modified aligned Xception).

    DeepLabv3+ adds BN (and ReLU) after the depthwise convolution, unlike the original Xception. The TF reference
    uses ReLU at both places in the ASPP/decoder "SC" convolutions and in Xception's exit flow block2; the other
    Xception modules apply a ReLU *before* the separable conv instead (relu_depthwise=relu_pointwise=False).
    `depthwise_norm=False` drops the BN and ReLU after the depthwise conv: the original Xception's separable
    conv, which VainF/DeepLabV3Plus-Pytorch's `--separable_conv` builds. Padding is symmetric
    (`dilation * (k - 1) / 2`), like the reference's explicit `fixed_padding`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
                 dilation: int = 1, relu_depthwise: bool = True, relu_pointwise: bool = True,
                 depthwise_norm: bool = True) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=pad,
                                   dilation=dilation, groups=in_channels, bias=False)
        self.depthwise_bn: nn.Module = nn.BatchNorm2d(in_channels) if depthwise_norm else nn.Identity()
        self.depthwise_act: nn.Module = (nn.ReLU(inplace=True) if relu_depthwise and depthwise_norm
                                         else nn.Identity())
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)
        self.pointwise_act: nn.Module = nn.ReLU(inplace=True) if relu_pointwise else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise_act(self.depthwise_bn(self.depthwise(x)))
        return self.pointwise_act(self.pointwise_bn(self.pointwise(x)))


def init_conv_weights(module: nn.Module) -> None:
    """He initialisation for random weights that keeps activations O(1): depthwise convs with the linear gain
    (they follow BN or a ReLU already counted by the pointwise conv after them), all others with ReLU's."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            depthwise = m.groups > 1 and m.groups == m.in_channels
            nn.init.kaiming_normal_(m.weight, nonlinearity="linear" if depthwise else "relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv3x3_bn_relu(in_channels: int, out_channels: int, *, dilation: int = 1, separable: bool,
                    depthwise_norm: bool = True) -> nn.Module:
    """The 3x3 conv of ASPP branches and decoders: dense (ConvBNReLU) or DeepLabv3+'s separable "SC" form
    (without BN and ReLU after the depthwise conv when not `depthwise_norm`, see SeparableConv2d)."""
    if separable:
        return SeparableConv2d(in_channels, out_channels, 3, dilation=dilation, depthwise_norm=depthwise_norm)
    return ConvBNReLU(in_channels, out_channels, 3, dilation=dilation)


class ImagePooling(nn.Sequential):
    """ASPP's image-level branch: global average -> 1x1 conv -> BN -> ReLU -> resize back to the input's size.

    Keys `1.*` (conv) and `2.*` (BN) as in torchvision's and VainF's ASPPPooling. The resize from 1x1 makes a
    constant map whatever align_corners is; it is kept a Resize (not expand) to mirror the references.
    """

    def __init__(self, in_channels: int, out_channels: int, *, align_corners: bool) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(super().forward(x), x.shape[-2:], self.align_corners)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLabv3): 1x1, three 3x3 atrous branches, image pooling; concat; 1x1.

    State-dict layout: `convs.0` 1x1, `convs.1-3` atrous, `convs.4` image pooling, `project.0/1` (the layout of
    torchvision and VainF/DeepLabV3Plus-Pytorch). Dropout 0.1 after the projection (TF: keep_prob 0.9).
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int], *, separable: bool,
                 align_corners: bool, dropout: float = 0.1, depthwise_norm: bool = True) -> None:
        super().__init__()
        if len(rates) != 3:
            raise ValueError(f"ASPP takes three atrous rates, got {list(rates)}")
        branches: list[nn.Module] = [ConvBNReLU(in_channels, out_channels, 1)]
        branches += [conv3x3_bn_relu(in_channels, out_channels, dilation=r, separable=separable,
                                     depthwise_norm=depthwise_norm) for r in rates]
        branches.append(ImagePooling(in_channels, out_channels, align_corners=align_corners))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


# --- TF1 bilinear resize (tf.image.resize_bilinear, align_corners=False, half_pixel_centers=False) -------------

# MSI-Net's TF reference and DilatedNet's Caffe reference (its interp_map) sample the source at dst * in/out with
# no half-pixel offset. torch's F.interpolate cannot do that (align_corners=False is half-pixel), so eager mode
# computes it with index_select + lerp, and the TorchScript ONNX exporter emits one ONNX Resize with
# coordinate_transformation_mode='asymmetric', which is the same function.


def _tf1_source_index(in_size: int, out_size: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lower and upper source index and the lerp weight of each output position along one axis."""
    scale = torch.as_tensor(in_size / out_size, dtype=torch.float32)  # TF: float(in) / out
    src = torch.arange(out_size, dtype=torch.float32, device=device) * scale.to(device)
    lower = src.floor().long().clamp(0, in_size - 1)
    upper = src.ceil().long().clamp(0, in_size - 1)  # the last rows repeat the edge, as TF1 does
    return lower, upper, src - lower.float()


def _tf1_resize_eager(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    # Width first, then height: the same operations in the same order as TF's top/bottom/lerp kernel.
    left, right, fx = _tf1_source_index(x.shape[3], out_w, x.device)
    lo, hi = x.index_select(3, left), x.index_select(3, right)
    x = lo + (hi - lo) * fx.to(x.dtype)
    top, bottom, fy = _tf1_source_index(x.shape[2], out_h, x.device)
    lo, hi = x.index_select(2, top), x.index_select(2, bottom)
    return lo + (hi - lo) * fy.to(x.dtype).view(-1, 1)


def _onnx_resize(g: Any, x: Any, scales: Any, sizes: Any | None) -> Any:
    attrs = {"coordinate_transformation_mode_s": "asymmetric", "mode_s": "linear", "nearest_mode_s": "floor"}
    roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    if sizes is None:
        return g.op("Resize", x, roi, scales, **attrs)
    return g.op("Resize", x, roi, scales, sizes, **attrs)


class _TF1ResizeByScale(torch.autograd.Function):
    """Export-only: runs the eager kernel while tracing, and becomes one ONNX Resize (asymmetric)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: int) -> torch.Tensor:
        with warnings.catch_warnings():  # the tracer warns of frozen shapes; `symbolic` replaces this body
            warnings.simplefilter("ignore")
            return _tf1_resize_eager(x, x.shape[2] * factor, x.shape[3] * factor)

    @staticmethod
    def symbolic(g: Any, x: Any, factor: int) -> Any:
        scales = g.op("Constant", value_t=torch.tensor([1.0, 1.0, factor, factor], dtype=torch.float32))
        return _onnx_resize(g, x, scales, None)


class _TF1ResizeLike(torch.autograd.Function):
    """Export-only: resize to the spatial size of `like`, which stays dynamic in the ONNX graph."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # as above
            warnings.simplefilter("ignore")
            return _tf1_resize_eager(x, like.shape[2], like.shape[3])

    @staticmethod
    def symbolic(g: Any, x: Any, like: Any) -> Any:
        sizes = g.op("Concat", g.op("Shape", x, start_i=0, end_i=2), g.op("Shape", like, start_i=2, end_i=4),
                     axis_i=0)
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        return _onnx_resize(g, x, empty, sizes)


def resize_bilinear_tf1(x: torch.Tensor, *, factor: int | None = None,
                        like: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear resize with TF1 semantics (src = dst * in/out; indices floor/ceil, clamped to the edge).

    Give either an integer upsampling `factor` or a tensor `like` whose height and width the output takes.
    Differentiable in eager mode; under torch.onnx export it becomes ONNX Resize(linear, asymmetric).
    """
    if (factor is None) == (like is None):
        raise ValueError("resize_bilinear_tf1 takes exactly one of factor= or like=")
    exporting = torch.onnx.is_in_onnx_export()
    if factor is not None:
        if exporting:
            return _TF1ResizeByScale.apply(x, factor)
        return _tf1_resize_eager(x, x.shape[2] * factor, x.shape[3] * factor)
    assert like is not None
    if exporting:
        return _TF1ResizeLike.apply(x, like)
    return _tf1_resize_eager(x, like.shape[2], like.shape[3])
