"""SSD detectors (SSD300/SSD512 on VGG16, SSDLite320 on MobileNetV3, the small ``ssd-mini``); importing this
package registers ``ssd300``, ``ssd300-bn``, ``ssd512``, ``ssd512-bn``, ``ssdlite320`` and ``ssd-mini``.

The family owns its builders (here), prior specs (:mod:`.priors`), model with its augmentation and decode
(:mod:`.model`), export graph (:mod:`.graph`) and backbones (:mod:`.vgg`, :mod:`.mobilenet`, :mod:`.mini`).
``config.extra["prior_spec"]`` holds the prior spec of every SSD model (stored in checkpoints);
``config.extra["reduced_tail"]`` (``ssdlite320``, default False) the half-width last MobileNetV3 stage of
torchvision's COCO SSDLite.
"""

from __future__ import annotations

from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.registry import Builder, register
from ssdcli.models.ssd.mini import MiniBackbone
from ssdcli.models.ssd.mobilenet import MobileNetV3Backbone, ssdlite_head
from ssdcli.models.ssd.model import SSD
from ssdcli.models.ssd.priors import SPEC_FOR_SIZE
from ssdcli.models.ssd.vgg import SSD300_EXTRAS, SSD512_EXTRAS, VGGBackbone
from ssdcli.models.ssd.recipes import MINI_RECIPES, SSDLITE_RECIPES, VGG_BN_RECIPES, VGG_RECIPES
from ssdcli.priors import PriorSpec


def _default_extra(arch: str):  # type: ignore[no-untyped-def]
    def extra(image_size: int) -> dict:
        return {"prior_spec": SPEC_FOR_SIZE[arch](image_size).to_dict()}

    return extra


def prior_spec_of(config: ModelConfig) -> PriorSpec:
    """The prior spec stored in ``config.extra``, checked against the input size."""
    spec = PriorSpec.from_dict(config.extra["prior_spec"])
    if spec.image_size != config.image_size:
        raise SsdError(f"{config.arch}: prior spec is for {spec.image_size}px input but image_size is {config.image_size}")
    return spec


def _vgg_ssd(extras: list, batch_norm: bool) -> Builder:
    def build(config: ModelConfig) -> DetectorModel:
        spec = prior_spec_of(config)
        backbone = VGGBackbone(extras, batch_norm=batch_norm)
        return SSD(config, backbone, backbone.out_channels, spec)

    return build


def _ssdlite320(config: ModelConfig) -> DetectorModel:
    spec = prior_spec_of(config)
    backbone = MobileNetV3Backbone(reduced_tail=bool(config.extra.get("reduced_tail", False)))
    return SSD(config, backbone, backbone.out_channels, spec, head=ssdlite_head)


def _ssd_mini(config: ModelConfig) -> DetectorModel:
    spec = prior_spec_of(config)
    backbone = MiniBackbone(len(spec.feature_maps))
    return SSD(config, backbone, backbone.out_channels, spec)


_ENTRIES = (
    ("ssd300", 300, VGG_RECIPES, _vgg_ssd(SSD300_EXTRAS, False)),
    ("ssd300-bn", 300, VGG_BN_RECIPES, _vgg_ssd(SSD300_EXTRAS, True)),
    ("ssd512", 512, VGG_RECIPES, _vgg_ssd(SSD512_EXTRAS, False)),
    ("ssd512-bn", 512, VGG_BN_RECIPES, _vgg_ssd(SSD512_EXTRAS, True)),
    ("ssdlite320", 320, SSDLITE_RECIPES, _ssdlite320),
    ("ssd-mini", 128, MINI_RECIPES, _ssd_mini),
)
for _name, _size, _recipes, _build in _ENTRIES:
    register(_name, _size, _recipes, default_extra=_default_extra(_name))(_build)

__all__ = ["SSD", "prior_spec_of"]
