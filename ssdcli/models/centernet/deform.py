"""Modulated deformable 3x3 convolution (DCNv2) from ``torchvision.ops.DeformConv2d``: no compiled extension,
CPU and CUDA. ONNX export goes through ``DeformConv`` (opset >= 19, see :mod:`.onnx_ops`)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import DeformConv2d


class ModulatedDeformConv3x3(nn.Module):
    """DCNv2-style 3x3 conv from ``torchvision.ops.DeformConv2d`` (no compiled extension). Offsets and masks
    come from a zero-initialised 3x3 conv, so it starts as a plain conv with a 0.5 mask."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.offset_mask = nn.Conv2d(cin, 27, kernel_size=3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        self.conv = DeformConv2d(cin, cout, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        om = self.offset_mask(x)
        if torch.is_autocast_enabled(x.device.type):  # torchvision's CPU kernel has no bfloat16: run it in float32
            with torch.autocast(x.device.type, enabled=False):
                return self.conv(x.float(), om[:, :18].float(), torch.sigmoid(om[:, 18:].float()))
        return self.conv(x, om[:, :18], torch.sigmoid(om[:, 18:]))
