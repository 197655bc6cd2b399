"""Architecture name -> builder: the single extension point for new detectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.mini import MiniBackbone
from ssdcli.models.mobilenet import MobileNetV3Backbone, ssdlite_head
from ssdcli.models.ssd import SSD
from ssdcli.models.vgg import SSD300_EXTRAS, SSD512_EXTRAS, VGGBackbone
from ssdcli.preprocess import IMAGENET, Preprocess
from ssdcli.priors import PRIOR_SPECS, SIZED_PRIOR_SPECS, PriorSpec

Builder = Callable[[ModelConfig], DetectorModel]
_BUILDERS: dict[str, Builder] = {}
_DEFAULT_SIZES: dict[str, int] = {}


def register(name: str, default_image_size: int) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        _DEFAULT_SIZES[name] = default_image_size
        return fn

    return deco


def available_models() -> list[str]:
    return sorted(_BUILDERS)


def _prior_spec(config: ModelConfig) -> PriorSpec:
    if "prior_spec" in config.extra:
        spec = PriorSpec.from_dict(config.extra["prior_spec"])
    else:
        if config.arch in SIZED_PRIOR_SPECS:
            spec = SIZED_PRIOR_SPECS[config.arch](config.image_size)
        else:
            spec = PRIOR_SPECS[config.arch]
        config.extra["prior_spec"] = spec.to_dict()
    if spec.image_size != config.image_size:
        raise SsdError(f"{config.arch}: prior spec is for {spec.image_size}px input but image_size is {config.image_size}")
    return spec


def _vgg_ssd(extras: list, batch_norm: bool) -> Builder:
    def build(config: ModelConfig) -> DetectorModel:
        spec = _prior_spec(config)
        backbone = VGGBackbone(extras, batch_norm=batch_norm)
        return SSD(config, backbone, backbone.out_channels, spec)

    return build


register("ssd300", 300)(_vgg_ssd(SSD300_EXTRAS, False))
register("ssd300-bn", 300)(_vgg_ssd(SSD300_EXTRAS, True))
register("ssd512", 512)(_vgg_ssd(SSD512_EXTRAS, False))
register("ssd512-bn", 512)(_vgg_ssd(SSD512_EXTRAS, True))


@register("ssdlite320", 320)
def _ssdlite320(config: ModelConfig) -> DetectorModel:
    spec = _prior_spec(config)
    backbone = MobileNetV3Backbone()
    return SSD(config, backbone, backbone.out_channels, spec, head=ssdlite_head)


@register("ssd-mini", 128)
def _ssd_mini(config: ModelConfig) -> DetectorModel:
    spec = _prior_spec(config)
    backbone = MiniBackbone(len(spec.feature_maps))
    return SSD(config, backbone, backbone.out_channels, spec)


def build_model(
    name: str,
    num_classes: int,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    preprocess: Preprocess | None = None,
    extra: dict | None = None,
) -> DetectorModel:
    """Build a detector by architecture name.

    ``num_classes`` counts the background (VOC: 21). ``class_names`` are the foreground names (default
    ``class1..``). ``extra`` carries family-specific settings, e.g. ``{"prior_spec": {...}}`` for SSD.
    """
    if name not in _BUILDERS:
        raise SsdError(f"unknown model '{name}' (available: {', '.join(available_models())})")
    if num_classes < 2:
        raise SsdError(f"num_classes must count the background plus at least one class (got {num_classes})")
    if class_names is None:
        class_names = [f"class{i}" for i in range(1, num_classes)]
    if len(class_names) != num_classes - 1:
        raise SsdError(f"{len(class_names)} class names given for num_classes={num_classes} (expected {num_classes - 1})")
    config = ModelConfig(
        arch=name,
        num_classes=num_classes,
        image_size=image_size or _DEFAULT_SIZES[name],
        preprocess=preprocess or IMAGENET,
        class_names=list(class_names),
        extra=dict(extra or {}),
    )
    return _BUILDERS[name](config)


def build_from_config(config: ModelConfig) -> DetectorModel:
    if config.arch not in _BUILDERS:
        raise SsdError(f"unknown model '{config.arch}' (available: {', '.join(available_models())})")
    return _BUILDERS[config.arch](replace(config, extra=dict(config.extra)))
