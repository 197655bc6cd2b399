"""Architecture name -> :class:`Architecture`: the single extension point for new detectors.

A family registers each architecture from its own package (``ssdcli/models/<family>/__init__.py``) with
:func:`register`; nothing outside the family knows its names. What a registration holds is one
:class:`Architecture` record, so a new per-architecture field is one new dataclass field and one keyword of
:func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel, ModelConfig
from ssdcli.models.recipe import START_KINDS, Recipe
from ssdcli.preprocess import IMAGENET, Preprocess

Builder = Callable[[ModelConfig], DetectorModel]
DefaultExtra = Callable[[int], dict]  # image size -> the family's settings stored in ModelConfig.extra


@dataclass(frozen=True)
class Architecture:
    """Everything the shared code knows about one architecture name."""

    name: str
    builder: Builder  # ModelConfig (with ``extra`` complete) -> model; must not modify the config
    default_image_size: int
    default_extra: DefaultExtra | None = None  # family settings for an image size (SSD: {"prior_spec": ...})
    recipes: dict[str, Recipe] = field(default_factory=dict)  # start kind (START_KINDS) -> training recipe

    def complete_extra(self, image_size: int, extra: dict | None) -> dict:
        """``extra`` with the family defaults for ``image_size`` filled in (given keys win)."""
        defaults = self.default_extra(image_size) if self.default_extra is not None else {}
        return {**defaults, **(extra or {})}


_ARCHITECTURES: dict[str, Architecture] = {}


def register(
    name: str,
    default_image_size: int,
    recipes: dict[str, Recipe] | None = None,
    *,
    default_extra: DefaultExtra | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``name``.

    ``recipes`` maps each start kind (``scratch``, ``backbone``, ``finetune``: :data:`ssdcli.models.recipe.START_KINDS`)
    to the family's training recipe for it. ``default_extra(image_size)`` gives the family-specific settings a new
    model stores in ``config.extra`` (checkpoints keep them, so old models rebuild identically).
    """
    if recipes is not None and set(recipes) != set(START_KINDS):
        raise ValueError(f"{name}: recipes must cover {START_KINDS}, got {sorted(recipes)}")

    def deco(fn: Builder) -> Builder:
        chosen = dict(recipes) if recipes else {k: Recipe(name=f"{name}-default") for k in START_KINDS}
        _ARCHITECTURES[name] = Architecture(name, fn, int(default_image_size), default_extra, chosen)
        return fn

    return deco


def unregister(name: str) -> None:
    """Forget ``name`` (tests that register a throw-away architecture)."""
    _ARCHITECTURES.pop(name, None)


def available_models() -> list[str]:
    return sorted(_ARCHITECTURES)


def architecture(name: str) -> Architecture:
    """The registration of ``name``; :class:`SsdError` listing the known names when there is none."""
    if name not in _ARCHITECTURES:
        raise SsdError(f"unknown model '{name}' (available: {', '.join(available_models())})")
    return _ARCHITECTURES[name]


def recipe_for(name: str, start: str) -> Recipe:
    """The training recipe of architecture ``name`` for a run that starts as ``start`` (see START_KINDS)."""
    return architecture(name).recipes[start]


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
    arch = architecture(name)
    if num_classes < 2:
        raise SsdError(f"num_classes must count the background plus at least one class (got {num_classes})")
    if class_names is None:
        class_names = [f"class{i}" for i in range(1, num_classes)]
    if len(class_names) != num_classes - 1:
        raise SsdError(f"{len(class_names)} class names given for num_classes={num_classes} (expected {num_classes - 1})")
    size = int(image_size or arch.default_image_size)
    config = ModelConfig(
        arch=name,
        num_classes=num_classes,
        image_size=size,
        preprocess=preprocess or IMAGENET,
        class_names=list(class_names),
        extra=arch.complete_extra(size, extra),
    )
    return arch.builder(config)


def build_from_config(config: ModelConfig) -> DetectorModel:
    """Rebuild a model from a stored config (checkpoints, ONNX metadata); missing family settings get defaults."""
    arch = architecture(config.arch)
    return arch.builder(replace(config, extra=arch.complete_extra(config.image_size, config.extra)))
