"""MobileNetV3-Large feature extractor and SSDLite extras/heads (as in the SSDLite / MobileNetV3 papers).

The trunk is torchvision's ``mobilenet_v3_large`` (so its ImageNet state dict loads as-is). Sources: the 1x1
expansion output of the last stride-2 block (672 ch, stride 16), the final 960-ch features (stride 32), then four
SSDLite extra blocks (1x1 -> depthwise 3x3 stride 2 -> 1x1) with 512, 256, 256, 128 channels.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large

_BN = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False),
        _BN(cout),
        nn.ReLU6(inplace=True),
    )


def ssdlite_extra(cin: int, cout: int) -> nn.Sequential:
    mid = cout // 2
    return nn.Sequential(_conv_bn_act(cin, mid, 1), _conv_bn_act(mid, mid, 3, stride=2, groups=mid), _conv_bn_act(mid, cout, 1))


def ssdlite_head(cin: int, cout: int) -> nn.Module:
    """Depthwise 3x3 + BN + ReLU6, then a 1x1 projection to the prediction channels."""
    head = nn.Sequential(_conv_bn_act(cin, cin, 3, groups=cin), nn.Conv2d(cin, cout, 1))
    nn.init.normal_(head[1].weight, std=0.03)
    nn.init.zeros_(head[1].bias)
    return head


class MobileNetV3Backbone(nn.Module):
    """``reduced_tail``: the last stage at half width (torchvision's option, MobileNetV3 paper table 6; the trunk
    of torchvision's COCO ``ssdlite320_mobilenet_v3_large``), so its final features have 480 channels, not 960."""

    EXTRA_CHANNELS = (512, 256, 256, 128)

    def __init__(self, reduced_tail: bool = False) -> None:
        super().__init__()
        trunk = mobilenet_v3_large(weights=None, norm_layer=_BN, reduced_tail=reduced_tail).features
        stride2 = [i for i, b in enumerate(trunk) if getattr(b, "_is_cn", False)]
        c4 = stride2[-1]
        self.body = trunk  # kept whole so torchvision's `features.*` keys map 1:1 to `backbone.body.*`
        self.c4 = c4
        chans = [672, trunk[-1].out_channels, *self.EXTRA_CHANNELS]
        self.extras = nn.ModuleList(ssdlite_extra(cin, cout) for cin, cout in zip(chans[1:-1], chans[2:]))
        self.out_channels = chans
        for m in self.extras.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.03)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        for layer in self.body[: self.c4]:
            x = layer(x)
        block = self.body[self.c4].block
        x = block[0](x)
        sources = [x]
        for layer in block[1:]:
            x = layer(x)
        for layer in self.body[self.c4 + 1 :]:
            x = layer(x)
        sources.append(x)
        for extra in self.extras:
            x = extra(x)
            sources.append(x)
        return sources
