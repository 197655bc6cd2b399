"""The reduced VGG16 of the SSD paper, with the extra feature layers of SSD300 / SSD512.

Layer layout follows the classic PyTorch port (``vgg.N`` indices are the same for the plain variant): pool3 in
ceil mode, pool5 3x3 stride 1, conv6 3x3 dilation 6 (1024 ch), conv7 1x1; L2Norm with learnable per-channel
scale (init 20) on conv4_3.
"""

from __future__ import annotations

import torch
from torch import nn

from ssdcli.models.base import NormalizationLayer

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]


class L2Norm(NormalizationLayer):
    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _conv(cin: int, cout: int, batch_norm: bool, **kw: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, bias=not batch_norm, **kw)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


def reduced_vgg16(batch_norm: bool = False) -> tuple[nn.ModuleList, int]:
    """The VGG16 trunk up to conv7. Returns (layers, index of the last layer of conv4_3 block)."""
    layers: list[nn.Module] = []
    cin = 3
    conv4_3_end = -1
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif v == "C":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += _conv(cin, int(v), batch_norm, kernel_size=3, padding=1)
            cin = int(v)
        if v == 512 and conv4_3_end < 0 and sum(1 for x in layers if isinstance(x, nn.Conv2d)) == 10:
            conv4_3_end = len(layers) - 1
    layers.append(nn.MaxPool2d(3, 1, 1))  # pool5
    layers += _conv(512, 1024, batch_norm, kernel_size=3, padding=6, dilation=6)  # conv6 (fc6)
    layers += _conv(1024, 1024, batch_norm, kernel_size=1)  # conv7 (fc7)
    return nn.ModuleList(layers), conv4_3_end


# (1x1 channels, 3x3 out channels, stride, padding[, kernel]) per extra level.
SSD300_EXTRAS = [(256, 512, 2, 1, 3), (128, 256, 2, 1, 3), (128, 256, 1, 0, 3), (128, 256, 1, 0, 3)]
SSD512_EXTRAS = [(256, 512, 2, 1, 3), (128, 256, 2, 1, 3), (128, 256, 2, 1, 3), (128, 256, 2, 1, 3), (128, 256, 1, 1, 4)]


def extra_layers(spec: list[tuple[int, int, int, int, int]], cin: int, batch_norm: bool) -> nn.ModuleList:
    blocks = []
    for mid, out, stride, pad, k in spec:
        blocks.append(
            nn.Sequential(
                *_conv(cin, mid, batch_norm, kernel_size=1),
                *_conv(mid, out, batch_norm, kernel_size=k, stride=stride, padding=pad),
            )
        )
        cin = out
    return nn.ModuleList(blocks)


class VGGBackbone(nn.Module):
    """Returns the SSD source feature maps: conv4_3 (L2-normalised), conv7, then one per extra block."""

    def __init__(self, extras: list[tuple[int, int, int, int, int]], batch_norm: bool = False) -> None:
        super().__init__()
        self.vgg, self.conv4_3_end = reduced_vgg16(batch_norm)
        self.l2norm = L2Norm(512, 20.0)
        self.extras = extra_layers(extras, 1024, batch_norm)
        self.out_channels = [512, 1024] + [e[1] for e in extras]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.extras.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        sources = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i == self.conv4_3_end:
                sources.append(self.l2norm(x))
        sources.append(x)
        for block in self.extras:
            x = block(x)
            sources.append(x)
        return sources

