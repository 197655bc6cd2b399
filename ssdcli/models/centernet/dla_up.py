"""CenterNet's up-sampling path for DLA-34: DLA-up (iterative deep aggregation over levels 2..5) then IDA-up to
one stride-4 map ("Objects as Points", sec. 6; the DLA paper's segmentation decoder with deformable convolutions).

An :class:`IDAUp` stage merges a list of maps, shallow to deep, into the shallowest one's resolution: every deeper
map goes through ``proj`` (3x3 conv to the output channels, BN, ReLU), a depth-wise transposed convolution
initialised as bilinear up-sampling (``up``, learnable), and is added to the previous (already merged) map and
refined by ``node`` (3x3 conv, BN, ReLU). The 3x3 convolutions are modulated deformable ones (DCNv2 through
``torchvision.ops.DeformConv2d`` with a mask, see :class:`.model.ModulatedDeformConv3x3`) or plain ones.

:class:`DLAUp` runs three IDA stages from the deep end (strides 16, 8, 4 outputs with 256, 128, 64 channels);
the final IDA-up merges those three into 64 channels at stride 4.
"""

from __future__ import annotations

import torch
from torch import nn

from ssdcli.models.centernet.deform import ModulatedDeformConv3x3


class ConvBlock(nn.Module):
    """3x3 conv (deformable or plain), BN, ReLU."""

    def __init__(self, cin: int, cout: int, deform: bool) -> None:
        super().__init__()
        self.conv: nn.Module = (
            ModulatedDeformConv3x3(cin, cout) if deform else nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        )
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def bilinear_up(channels: int, factor: int) -> nn.ConvTranspose2d:
    """Depth-wise ``ConvTranspose2d`` (kernel ``2 * factor``) whose initial weights up-sample bilinearly."""
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, groups=channels,
                            bias=False)
    k = 2 * factor
    centre = (k - 1) / 2 if k % 2 == 1 else k / 2 - 0.5
    taps = 1 - (torch.arange(k, dtype=torch.float32) - centre).abs() / factor
    with torch.no_grad():
        up.weight.copy_((taps[:, None] * taps[None, :]).expand(channels, 1, k, k))
    return up


class IDAUp(nn.Module):
    """Iterative deep aggregation of maps with ``in_channels`` whose strides are ``factors`` x the first one's."""

    def __init__(self, out_channels: int, in_channels: list[int], factors: list[int], deform: bool) -> None:
        super().__init__()
        self.proj = nn.ModuleList(ConvBlock(c, out_channels, deform) for c in in_channels[1:])
        self.up = nn.ModuleList(bilinear_up(out_channels, f) for f in factors[1:])
        self.node = nn.ModuleList(ConvBlock(out_channels, out_channels, deform) for _ in in_channels[1:])

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Returns the merged maps (``out[0] = maps[0]``, ``out[i]`` merges ``maps[0..i]``), all at ``maps[0]``'s
        resolution from index 1 on."""
        out = [maps[0]]
        for proj, up, node, x in zip(self.proj, self.up, self.node, maps[1:]):
            out.append(node(up(proj(x)) + out[-1]))
        return out


class DLAUp(nn.Module):
    """``maps`` at strides 4, 8, 16, 32 (channels 64..512) -> merged maps at strides 4, 8, 16 (64, 128, 256 ch)."""

    def __init__(self, channels: list[int], deform: bool) -> None:
        super().__init__()
        stages = []
        ins, factors = list(channels), [2**i for i in range(len(channels))]
        for j in range(len(channels) - 2, -1, -1):  # from the second-deepest map down to the shallowest
            rel = [f // factors[j] for f in factors[j:]]
            stages.append(IDAUp(channels[j], ins[j:], rel, deform))
            ins[j + 1 :] = [channels[j]] * (len(channels) - j - 1)
            factors[j + 1 :] = [factors[j]] * (len(channels) - j - 1)
        self.stages = nn.ModuleList(stages)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        maps = list(maps)
        results = []
        for i, stage in enumerate(self.stages):
            j = len(maps) - 2 - i
            maps[j:] = stage(maps[j:])
            results.insert(0, maps[-1])
        return results


class DLASegNeck(nn.Module):
    """DLA-up + the final IDA-up: levels 2..5 of DLA-34 -> one 64-channel map at stride 4."""

    def __init__(self, channels: list[int], deform: bool) -> None:
        super().__init__()
        self.dla_up = DLAUp(channels, deform)
        n = len(channels) - 1
        self.ida_up = IDAUp(channels[0], channels[:n], [2**i for i in range(n)], deform)
        self.out_channels = channels[0]

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.ida_up(self.dla_up(maps))[-1]
