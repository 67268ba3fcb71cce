"""VGG-based module structures of other repositories (torchvision VGG16, wkentaro's FCN-8s, the foveacast
MSI-Net port), written for the tests from what their code builds; see tests/zoo/foreign.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.zoo.foreign import Ch, full

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class TvVGG16(nn.Module):
    """features: conv 3x3 pad 1, [BN,] ReLU per layer, MaxPool 2x2 after each stage; classifier: Linear(C*7*7,
    4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, 1000)."""

    def __init__(self, *, batch_norm: bool = False, ch: Ch = full, fc: int = 4096, kernel: int = 7) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            assert isinstance(v, int)
            layers.append(nn.Conv2d(cin, ch(v), 3, padding=1))
            layers += [nn.BatchNorm2d(ch(v)), nn.ReLU()] if batch_norm else [nn.ReLU()]
            cin = ch(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(kernel)
        self.classifier = nn.Sequential(nn.Linear(cin * kernel * kernel, fc), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(fc, fc), nn.ReLU(), nn.Dropout(), nn.Linear(fc, 1000))


# --- wkentaro/pytorch-fcn: torchfcn/models/fcn8s.py -----------------------------------------------------------

class WkentaroFCN8s(nn.Module):
    """conv1_1 padded 100, every conv a bare Conv2d with its own ReLU (relu1_1 ...), MaxPool2d(2, 2,
    ceil_mode=True) pool1-5, fc6 Conv 7x7 valid, fc7 1x1, score_fr, score_pool3/4, ConvTranspose2d upscore2
    (4, s2), upscore_pool4 (4, s2), upscore8 (16, s8) without bias; crops 5, 9, 31."""

    # FCN8sAtOnce (train_fcn8s_atonce.py): the same modules, pool4 x 0.01 and pool3 x 0.0001 before scoring.
    pool_scales = (1.0, 1.0)

    def __init__(self, n_class: int = 21, ch: Ch = full) -> None:
        super().__init__()
        cin, block = 3, 1
        for v in VGG16:
            if v == "M":
                setattr(self, f"pool{block}", nn.MaxPool2d(2, 2, ceil_mode=True))
                block += 1
                continue
            assert isinstance(v, int)
            name = f"{block}_{sum(1 for n in self._modules if n.startswith(f'conv{block}_')) + 1}"
            setattr(self, f"conv{name}", nn.Conv2d(cin, ch(v), 3, padding=100 if name == "1_1" else 1))
            setattr(self, f"relu{name}", nn.ReLU())
            cin = ch(v)
        self.fc6 = nn.Conv2d(cin, ch(4096), 7)
        self.relu6, self.drop6 = nn.ReLU(), nn.Dropout2d()
        self.fc7 = nn.Conv2d(ch(4096), ch(4096), 1)
        self.relu7, self.drop7 = nn.ReLU(), nn.Dropout2d()
        self.score_fr = nn.Conv2d(ch(4096), n_class, 1)
        self.score_pool3 = nn.Conv2d(ch(256), n_class, 1)
        self.score_pool4 = nn.Conv2d(ch(512), n_class, 1)
        self.upscore2 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)
        self.upscore8 = nn.ConvTranspose2d(n_class, n_class, 16, stride=8, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(n_class, n_class, 4, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, pools = x, {}
        for block, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True):
            for i in range(1, n + 1):
                h = getattr(self, f"relu{block}_{i}")(getattr(self, f"conv{block}_{i}")(h))
            h = getattr(self, f"pool{block}")(h)
            pools[block] = h
        h = self.drop7(self.relu7(self.fc7(self.drop6(self.relu6(self.fc6(h))))))
        up2 = self.upscore2(self.score_fr(h))
        h = up2 + self.score_pool4(pools[4] * self.pool_scales[0])[:, :, 5:5 + up2.shape[2], 5:5 + up2.shape[3]]
        up4 = self.upscore_pool4(h)
        h = up4 + self.score_pool3(pools[3] * self.pool_scales[1])[:, :, 9:9 + up4.shape[2], 9:9 + up4.shape[3]]
        return self.upscore8(h)[:, :, 31:31 + x.shape[2], 31:31 + x.shape[3]]


class WkentaroFCN8sAtOnce(WkentaroFCN8s):
    pool_scales = (0.01, 0.0001)


# --- khawkins98/foveacast-training: src/foveacast_training/msinet.py ------------------------------------------

FOVEACAST_MEAN = (103.939, 116.779, 123.68)


def tf1_resize(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """TF1 resize_bilinear (align_corners=False, half_pixel_centers=False): source = dest * in/out, clamped."""
    h, w = x.shape[-2:]
    sy = torch.arange(out_h, dtype=x.dtype) * (h / out_h)
    sx = torch.arange(out_w, dtype=x.dtype) * (w / out_w)
    y0, x0 = sy.floor().long().clamp(0, h - 1), sx.floor().long().clamp(0, w - 1)
    y1, x1 = (y0 + 1).clamp(0, h - 1), (x0 + 1).clamp(0, w - 1)
    dy, dx = (sy - y0).view(-1, 1), (sx - x0).view(1, -1)
    top = x[..., y0[:, None], x0[None, :]] * (1 - dx) + x[..., y0[:, None], x1[None, :]] * dx
    bottom = x[..., y1[:, None], x0[None, :]] * (1 - dx) + x[..., y1[:, None], x1[None, :]] * dx
    return top * (1 - dy) + bottom * dy


class FoveacastMSINet(nn.Module):
    """Bare Conv2d attributes conv1_1 ... conv5_3 (conv5 dilated 2), aspp_b1-b5, aspp_proj, decoder_conv1-4;
    the mean is subtracted inside forward; pool4/pool5 2x2 stride 1 after a right/bottom zero pad; per-image
    min-max output."""

    def __init__(self, ch: Ch = full) -> None:
        super().__init__()
        cin, block = 3, 1
        for v in VGG16[:-1]:
            if v == "M":
                block += 1
                continue
            assert isinstance(v, int)
            i = sum(1 for n in self._modules if n.startswith(f"conv{block}_")) + 1
            rate = 2 if block == 5 else 1
            setattr(self, f"conv{block}_{i}", nn.Conv2d(cin, ch(v), 3, padding=rate, dilation=rate))
            cin = ch(v)
        enc, a = ch(256) + 2 * ch(512), ch(256)
        self.aspp_b1 = nn.Conv2d(enc, a, 1)
        self.aspp_b2, self.aspp_b3, self.aspp_b4 = (nn.Conv2d(enc, a, 3, padding=r, dilation=r) for r in (4, 8, 12))
        self.aspp_b5 = nn.Conv2d(enc, a, 1)
        self.aspp_proj = nn.Conv2d(5 * a, a, 1)
        self.decoder_conv1 = nn.Conv2d(a, ch(128), 3, padding=1)
        self.decoder_conv2 = nn.Conv2d(ch(128), ch(64), 3, padding=1)
        self.decoder_conv3 = nn.Conv2d(ch(64), ch(32), 3, padding=1)
        self.decoder_conv4 = nn.Conv2d(ch(32), 1, 3, padding=1)

    def _block(self, x: torch.Tensor, block: int, n: int) -> torch.Tensor:
        for i in range(1, n + 1):
            x = F.relu(getattr(self, f"conv{block}_{i}")(x))
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images - torch.tensor(FOVEACAST_MEAN).view(1, 3, 1, 1)
        x = F.max_pool2d(self._block(x, 1, 2), 2, 2)
        x = F.max_pool2d(self._block(x, 2, 2), 2, 2)
        pool3 = F.max_pool2d(self._block(x, 3, 3), 2, 2)
        pool4 = F.max_pool2d(F.pad(self._block(pool3, 4, 3), (0, 1, 0, 1)), 2, 1)
        pool5 = F.max_pool2d(F.pad(self._block(pool4, 5, 3), (0, 1, 0, 1)), 2, 1)
        f = torch.cat([pool3, pool4, pool5], dim=1)
        b5 = tf1_resize(F.relu(self.aspp_b5(f.mean(dim=(2, 3), keepdim=True))), f.shape[2], f.shape[3])
        parts = [F.relu(conv(f)) for conv in (self.aspp_b1, self.aspp_b2, self.aspp_b3, self.aspp_b4)] + [b5]
        x = F.relu(self.aspp_proj(torch.cat(parts, dim=1)))
        for conv in (self.decoder_conv1, self.decoder_conv2, self.decoder_conv3):
            x = F.relu(conv(tf1_resize(x, 2 * x.shape[2], 2 * x.shape[3])))
        maps = self.decoder_conv4(x)
        maps = maps - maps.amin(dim=(1, 2, 3), keepdim=True)
        return maps / (1e-7 + maps.amax(dim=(1, 2, 3), keepdim=True))
