"""CenterNet with DLA-34 ("Objects as Points", its main speed/accuracy model): :class:`.dla.DLA34` levels 2..5
-> :class:`.dla_up.DLASegNeck` (DLA-up + IDA-up, 64 channels at stride 4) -> the shared heads (256-channel 3x3
conv + ReLU + 1x1 conv, as the paper's DLA model).

Two architecture names, one setting: ``centernet-dla34`` has modulated deformable 3x3 convolutions in the
up-sampling path (the paper's model), ``centernet-dla34-plain`` plain 3x3 convolutions there. The name is what a
user picks (``ssd train --arch``) and what an export refusal can point to; the choice is also stored in
``config.extra["deform"]`` so a checkpoint rebuilds the same network whatever the name's default.

State-dict names: ``backbone.*`` (the DLA authors' / timm's ``dla34`` names, see :mod:`.dla`),
``neck.dla_up.stages.{0,1,2}.{proj,up,node}.*``, ``neck.ida_up.{proj,up,node}.*``, ``head_{heatmap,size,offset}``.

Export: the plain variant at any supported opset; the deformable one through ONNX ``DeformConv`` (opset >= 19,
:mod:`.onnx_ops`), which the installed ONNX Runtime runs on CPU (checked by ``tests/test_centernet_dla.py``).
"""

from __future__ import annotations

import torch

from ssdcli.models.base import ModelConfig
from ssdcli.models.centernet.decode import MAX_PEAKS
from ssdcli.models.centernet.dla import DLA34
from ssdcli.models.centernet.dla_up import DLASegNeck
from ssdcli.models.centernet.loss import OFFSET_WEIGHT, SIZE_WEIGHT
from ssdcli.models.centernet.model import CenterNetBase

FIRST_LEVEL = 2  # level2 has stride 4, the output stride
DEFAULTS: dict = {
    "deform": True,
    "head_conv": 256,
    "max_peaks": MAX_PEAKS,
    "min_overlap": 0.7,
    "exact_radius": False,
    "size_weight": SIZE_WEIGHT,
    "offset_weight": OFFSET_WEIGHT,
}
PLAIN_ARCH = "centernet-dla34-plain"


class CenterNetDLA(CenterNetBase):
    """CenterNet-DLA-34 (module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self._init_settings(config, DEFAULTS)
        self.backbone = DLA34()
        self.neck = DLASegNeck(list(DLA34.channels[FIRST_LEVEL:]), bool(self.settings["deform"]))
        self._build_heads(self.neck.out_channels)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone.features(images)[FIRST_LEVEL:])

    @property
    def plain_variant(self) -> str:
        return PLAIN_ARCH


def build_centernet_dla(config: ModelConfig) -> CenterNetDLA:
    return CenterNetDLA(config)
