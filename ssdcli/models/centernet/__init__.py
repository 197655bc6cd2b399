"""CenterNet ("Objects as Points") detectors; importing this package registers ``centernet-res18`` and
``centernet-res50`` (default input 384), ``centernet-dla34`` (deformable up-sampling path) and
``centernet-dla34-plain`` (plain convolutions there; default input 512); any multiple of 32 via ``image_size``."""

from __future__ import annotations

from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.centernet.dla_model import PLAIN_ARCH, CenterNetDLA, build_centernet_dla
from ssdcli.models.centernet.model import CenterNet, build_centernet
from ssdcli.models.centernet.onnx_ops import register_deform_conv_symbolic
from ssdcli.models.centernet.recipes import DLA_RECIPES, RECIPES
from ssdcli.models.registry import register

ARCHITECTURES: dict[str, str] = {"centernet-res18": "resnet18", "centernet-res50": "resnet50"}


def _builder(resnet: str):  # type: ignore[no-untyped-def]
    def build(config: ModelConfig) -> DetectorModel:
        return build_centernet(config, resnet)

    return build


register_deform_conv_symbolic()
for _name, _resnet in ARCHITECTURES.items():
    register(_name, 384, RECIPES)(_builder(_resnet))
register("centernet-dla34", 512, DLA_RECIPES, default_extra=lambda size: {"deform": True})(build_centernet_dla)
register(PLAIN_ARCH, 512, DLA_RECIPES, default_extra=lambda size: {"deform": False})(build_centernet_dla)

__all__ = ["ARCHITECTURES", "CenterNet", "CenterNetDLA", "build_centernet", "build_centernet_dla"]
