"""DLA-34 ("Deep Layer Aggregation", Yu et al. 2018) as a feature extractor for CenterNet.

Written here (about 120 lines) rather than taken from ``timm``: timm 1.0 does provide ``dla34`` with ImageNet
weights and ``features_only``, but it would be a new required dependency (timm + huggingface_hub + safetensors +
pyyaml) for one backbone, and its ``features_only`` wrapper renames the modules. This module keeps the state-dict
names of the DLA authors' release (which timm also uses), so both their ``dla34-ba72cf86.pth`` and a timm
``dla34`` state dict load 1:1 (``--backbone-weights FILE``; see :func:`imagenet_state`).

Layout (channels 16, 32, 64, 128, 256, 512; levels 1, 1, 1, 2, 2, 1; basic residual blocks)::

    base_layer   7x7 conv 3->16, BN, ReLU                         stride 1
    level0       3x3 conv 16->16, BN, ReLU                        stride 1
    level1       3x3 conv 16->32 (stride 2), BN, ReLU             stride 2
    level2..5    aggregation trees of depth 1, 2, 2, 1            strides 4, 8, 16, 32

A tree of depth 1 is two basic blocks whose outputs (and, for a "level root", the downsampled input of the whole
level) an aggregation node (``root``: 1x1 conv over the concatenation, BN, ReLU) merges; a tree of depth 2 chains
two depth-1 trees, the second one's node also taking the first tree's output (hierarchical deep aggregation).
:meth:`DLA34.features` returns all six levels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
LEVELS: tuple[int, ...] = (1, 1, 1, 2, 2, 1)
# The authors' file also holds 1x1 "project" layers of the depth-2 trees that their forward never uses.
_UNUSED_KEYS = re.compile(r"^(fc\.|level[3-4]\.project\.)")


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or given) shortcut: ``relu(bn2(conv2(relu(bn1(conv1 x)))) + s)``."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if shortcut is None else shortcut))


class Root(nn.Module):
    """Aggregation node: 1x1 conv over the concatenated inputs, BN, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(inputs, 1))))


class Tree(nn.Module):
    """Hierarchical aggregation tree of ``depth`` (1 or more) over basic blocks; ``stride`` 1 or 2.

    ``level_root``: the node of the deepest-right subtree also aggregates the level's downsampled input.
    ``root_extra``: channels of the extra inputs that an enclosing tree hands to this tree's node.
    """

    def __init__(self, depth: int, cin: int, cout: int, stride: int = 1, level_root: bool = False,
                 root_extra: int = 0) -> None:
        super().__init__()
        root_in = 2 * cout + root_extra + (cin if level_root else 0)
        self.depth, self.level_root = depth, level_root
        self.downsample = nn.MaxPool2d(stride, stride) if stride > 1 else nn.Identity()
        self.project: nn.Module = nn.Identity()
        self.tree1: nn.Module
        self.tree2: nn.Module
        if depth == 1:
            self.tree1 = BasicBlock(cin, cout, stride)
            self.tree2 = BasicBlock(cout, cout, 1)
            self.root = Root(root_in, cout)
            if cin != cout:
                self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        else:
            self.tree1 = Tree(depth - 1, cin, cout, stride)
            self.tree2 = Tree(depth - 1, cout, cout, 1, root_extra=root_in - 2 * cout + cout)

    def forward(self, x: torch.Tensor, children: list[torch.Tensor] | None = None) -> torch.Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x)
        if self.level_root:
            children.append(bottom)
        if self.depth == 1:
            x1 = self.tree1(x, self.project(bottom))
            return self.root(self.tree2(x1), x1, *children)
        x1 = self.tree1(x)
        return self.tree2(x1, children + [x1])


class DLA34(nn.Module):
    """DLA-34 without its classifier: ``features(x)`` -> 6 maps at strides 1, 2, 4, 8, 16, 32."""

    channels = CHANNELS

    def __init__(self) -> None:
        super().__init__()
        c = CHANNELS
        self.base_layer = nn.Sequential(*_conv_bn_relu(3, c[0], 7))
        self.level0 = nn.Sequential(*_conv_bn_relu(c[0], c[0], 3))
        self.level1 = nn.Sequential(*_conv_bn_relu(c[0], c[1], 3, stride=2))
        self.level2 = Tree(LEVELS[2], c[1], c[2], 2, level_root=False)
        self.level3 = Tree(LEVELS[3], c[2], c[3], 2, level_root=True)
        self.level4 = Tree(LEVELS[4], c[3], c[4], 2, level_root=True)
        self.level5 = Tree(LEVELS[5], c[4], c[5], 2, level_root=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.base_layer(x)
        out = []
        for level in (self.level0, self.level1, self.level2, self.level3, self.level4, self.level5):
            x = level(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]


def imagenet_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DLA-34 ImageNet state dict (the authors' release or timm's ``dla34``) without the classifier and the
    unused projection layers: the keys that :class:`DLA34` has."""
    return {k: v for k, v in state.items() if not _UNUSED_KEYS.match(k)}


def is_dla34_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` looks like a DLA-34 ImageNet state dict (a 16-channel 7x7 stem and a 512-channel level5)."""
    stem, top = state.get("base_layer.0.weight"), state.get("level5.root.conv.weight")
    return stem is not None and top is not None and tuple(stem.shape) == (16, 3, 7, 7) and top.shape[0] == 512


# ImageNet DLA-34 of the DLA authors (the file timm's ``dla34`` default configuration also points to).
DLA34_URL = "http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth"
