"""``ssd-mini``: a small BatchNorm SSD for CPU demos, quick experiments and tests (default 128 px input).

Backbone: 3x3 conv-BN-ReLU stages (16, 32, 64 channels at strides 2, 4, 8; 128 at 16), then SSD extra
levels of 1x1 + 3x3 stride-2 convs down to 1x1 (about 50 MMAC per 128 px image). Sources at strides 8, 16, 32, 64 and the final map; priors
with the SSD paper's linear scales (0.1..0.9) and aspect ratios {1, 2, 1/2}.
"""

from __future__ import annotations

import torch
from torch import nn


def _cbr(cin: int, cout: int, stride: int = 1, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class MiniBackbone(nn.Module):
    def __init__(self, num_sources: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(3, 16, 2), *_cbr(16, 32, 2), *_cbr(32, 32), *_cbr(32, 64, 2), *_cbr(64, 64))
        levels = [nn.Sequential(*_cbr(64, 128, 2), *_cbr(128, 128))]
        for _ in range(num_sources - 2):
            levels.append(nn.Sequential(*_cbr(128, 64, k=1), *_cbr(64, 128, 2)))
        self.levels = nn.ModuleList(levels)
        self.out_channels = [64] + [128] * (num_sources - 1)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        sources = [x]
        for level in self.levels:
            x = level(x)
            sources.append(x)
        return sources
