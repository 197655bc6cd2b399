"""CenterNet ("Objects as Points") detectors; importing this package registers ``centernet-res18`` and
``centernet-res50`` (default input 384, any multiple of 32 via ``image_size``)."""

from __future__ import annotations

from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.centernet.model import CenterNet, build_centernet
from ssdcli.models.centernet.onnx_ops import register_deform_conv_symbolic
from ssdcli.models.centernet.recipes import RECIPES
from ssdcli.models.registry import register

ARCHITECTURES: dict[str, str] = {"centernet-res18": "resnet18", "centernet-res50": "resnet50"}


def _builder(resnet: str):  # type: ignore[no-untyped-def]
    def build(config: ModelConfig) -> DetectorModel:
        return build_centernet(config, resnet)

    return build


register_deform_conv_symbolic()
for _name, _resnet in ARCHITECTURES.items():
    register(_name, 384, RECIPES)(_builder(_resnet))

__all__ = ["ARCHITECTURES", "CenterNet", "build_centernet"]
