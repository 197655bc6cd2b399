"""Model initialisation for training: from scratch, fine-tuning from a checkpoint, or ImageNet backbones."""

from __future__ import annotations

from collections.abc import Callable

from ssdcli.checkpoint import load_checkpoint
from ssdcli.convert.backbones import load_backbone_weights, load_pretrained_backbone
from ssdcli.convert.pretrained import resolve_weights
from ssdcli.engine.class_transfer import ClassTransfer, match_classes, parse_class_map
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
    class_map: str | None = None,
) -> tuple[DetectorModel, ClassTransfer | None]:
    """Build the model to train and explain (through ``note``) what was loaded into it.

    ``weights``: a native checkpoint, or ``coco-ssd300`` / ``coco-ssdlite320`` (:mod:`ssdcli.convert.pretrained`).
    When its classes differ from ``class_names``, classes matched by name (or ``class_map``) keep their trained
    rows (:mod:`ssdcli.engine.class_transfer`); the returned :class:`ClassTransfer` says which (None otherwise).
    """
    num_classes = len(class_names) + 1
    if weights:
        path = resolve_weights(weights, note)
        ckpt = load_checkpoint(path)
        cfg = ckpt.config
        if cfg.arch != arch:
            note(f"--weights is a '{cfg.arch}' checkpoint: training '{cfg.arch}' (not '{arch}')")
        if image_size and image_size != cfg.image_size:
            raise SsdError(f"{weights}: checkpoint input size is {cfg.image_size}, --img-size asks {image_size}")
        same_classes = cfg.class_names == class_names
        if class_map and same_classes:
            raise SsdError(f"--class-map: {weights} already has the dataset's classes; nothing to map")
        new_cfg = ModelConfig(
            arch=cfg.arch,
            num_classes=num_classes,
            image_size=cfg.image_size,
            preprocess=cfg.preprocess,
            class_names=list(class_names),
            extra=dict(cfg.extra),
            nms_threshold=cfg.nms_threshold,
        )
        model = build_from_config(new_cfg)
        state = ckpt.model_state
        transfer = None
        if not same_classes:
            transfer = match_classes(cfg.class_names, class_names, parse_class_map(class_map), weights)
            prefixes = model.head_parameter_prefixes()
            kept = model.transfer_class_rows(state, transfer.rows_tensor())
            state = {k: v for k, v in state.items() if not k.startswith(prefixes)} | kept
            note(transfer.text(weights))
        own = model.state_dict()
        bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if bad:
            raise SsdError(f"{weights}: {len(bad)} tensors do not fit '{cfg.arch}' (e.g. {bad[0]})")
        model.load_state_dict(state, strict=False)
        note(f"initialised from {weights}" + (f" ({path})" if path != weights else ""))
        return model, transfer
    if class_map:
        raise SsdError("--class-map: only used when fine-tuning from --weights")
    model = build_model(arch, num_classes, class_names=class_names, image_size=image_size)
    if backbone_weights:
        note(load_backbone_weights(model, backbone_weights))
    elif pretrained_backbone:
        note(load_pretrained_backbone(model))
    return model, None
