"""Model initialisation for training: from scratch, fine-tuning from a checkpoint, or ImageNet backbones."""

from __future__ import annotations

from collections.abc import Callable

from ssdcli.checkpoint import load_checkpoint
from ssdcli.convert.backbones import load_backbone_weights, load_pretrained_backbone
from ssdcli.errors import SsdError
from ssdcli.models import DetectorModel, build_model
from ssdcli.models.base import ModelConfig
from ssdcli.models.registry import build_from_config


def init_model(
    arch: str,
    class_names: list[str],
    image_size: int | None,
    weights: str | None,
    backbone_weights: str | None,
    pretrained_backbone: bool,
    note: Callable[[str], None],
) -> DetectorModel:
    """Build the model to train and explain (through ``note``) what was loaded into it."""
    num_classes = len(class_names) + 1
    if weights:
        ckpt = load_checkpoint(weights)
        cfg = ckpt.config
        if cfg.arch != arch:
            note(f"--weights is a '{cfg.arch}' checkpoint: training '{cfg.arch}' (not '{arch}')")
        if image_size and image_size != cfg.image_size:
            raise SsdError(f"{weights}: checkpoint input size is {cfg.image_size}, --img-size asks {image_size}")
        same_classes = cfg.class_names == class_names
        new_cfg = ModelConfig(
            arch=cfg.arch,
            num_classes=num_classes,
            image_size=cfg.image_size,
            preprocess=cfg.preprocess,
            class_names=list(class_names),
            extra=dict(cfg.extra),
        )
        model = build_from_config(new_cfg)
        state = ckpt.model_state
        if not same_classes:
            prefixes = model.head_parameter_prefixes()
            state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
            note(
                f"class list differs from {weights} ({len(cfg.class_names)} -> {len(class_names)} classes): "
                f"class heads ({', '.join(prefixes)}) re-initialised, everything else kept"
            )
        own = model.state_dict()
        bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if bad:
            raise SsdError(f"{weights}: {len(bad)} tensors do not fit '{cfg.arch}' (e.g. {bad[0]})")
        model.load_state_dict(state, strict=False)
        note(f"initialised from {weights}")
        return model
    model = build_model(arch, num_classes, class_names=class_names, image_size=image_size)
    if backbone_weights:
        note(load_backbone_weights(model, backbone_weights))
    elif pretrained_backbone:
        note(load_pretrained_backbone(model))
    return model
