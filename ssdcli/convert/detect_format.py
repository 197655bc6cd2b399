"""Guess which project a foreign state dict comes from (``ssd convert --from auto``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ssdcli.convert import amdegroot, torchvision_ssd, torchvision_ssdlite
from ssdcli.convert.backbones import identify_backbone
from ssdcli.errors import SsdError

FORMATS = ("amdegroot", "torchvision")
UNKNOWN = "an unknown layout"


def describe_layout(state: Mapping[str, torch.Tensor]) -> tuple[str | None, str]:
    """``(format or None, what was recognised)`` for a state dict; never raises."""
    if amdegroot.is_amdegroot(state):
        return amdegroot.FORMAT, "ssd.pytorch SSD300 (keys vgg.N.*, L2Norm.weight, extras.N.*, loc.N.*, conf.N.*)"
    if torchvision_ssd.is_torchvision_ssd300(state):
        return torchvision_ssd.FORMAT, (
            "torchvision ssd300_vgg16 (keys backbone.features.*, backbone.scale_weight, backbone.extra.*, head.*)"
        )
    if torchvision_ssdlite.is_torchvision_ssdlite(state):
        return torchvision_ssd.FORMAT, (
            "torchvision ssdlite320_mobilenet_v3_large (keys backbone.features.0/1.*, backbone.extra.*, head.*)"
        )
    kind = identify_backbone(state)
    if kind is not None:
        return None, f"an ImageNet {kind} classifier, not a detector (use it with `ssd train --backbone-weights`)"
    return None, UNKNOWN


def detect_format(state: Mapping[str, torch.Tensor], source: str) -> tuple[str, str]:
    """The convertible format of ``state`` and the evidence; :class:`SsdError` when it is none of them."""
    fmt, what = describe_layout(state)
    if fmt is None:
        keys = list(state)
        sample = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        raise SsdError(
            f"{source}: cannot convert {what}; --from amdegroot expects vgg.N/L2Norm/extras/loc/conf keys, "
            f"--from torchvision expects backbone.features/backbone.extra/head keys; found keys {sample}"
        )
    return fmt, what
