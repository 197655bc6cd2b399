"""torchvision ``ssdlite320_mobilenet_v3_large`` state dicts -> native ``ssdlite320`` models.

torchvision's SSDLite splits the MobileNetV3-Large trunk at the expansion (1x1) layer of its last stride-2 block
(``c4``, index 13): ``features.0`` = blocks 0..12 + that block's ``block[0]``, ``features.1`` = the rest of that
block (a slice of its ``block``, keeping the block's own child indices) + blocks 14..16. Key mapping::

    backbone.features.0.I.*   (I < 13)  -> backbone.body.I.*
    backbone.features.0.13.*            -> backbone.body.13.block.0.*
    backbone.features.1.0.J.*           -> backbone.body.13.block.J.*      (J = 1..3)
    backbone.features.1.M.*   (M >= 1)  -> backbone.body.{13 + M}.*
    backbone.extra.E.*                  -> backbone.extras.E.*
    head.regression_head.module_list.i.*     -> loc.i.*   (depthwise 3x3 + BN + ReLU6, 1x1 projection)
    head.classification_head.module_list.i.* -> conf.i.*

Its COCO model is built without ImageNet backbone weights, which makes torchvision use the *reduced tail*
(last stage at half width: 480 final channels): recorded as ``config.extra["reduced_tail"]``, detected from the
state dict. Anchors: ``DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)`` (scales 0.2 + 0.15 k,
then 1.0; steps from the feature maps 20, 10, 5, 3, 2, 1; clip=True clamps widths/heights to [0, 1]) in our
prior order; box coder weights (10, 10, 5, 5) = our variances (0.1, 0.2). Input: 0..1 RGB normalised with mean
0.5 / std 0.5 (to [-1, 1]), warped to 320x320 (``GeneralizedRCNNTransform`` with ``fixed_size``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ssdcli.convert.classes import resolve_class_names
from ssdcli.convert.common import apply_rename_rules, transfer
from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel
from ssdcli.models.registry import build_model
from ssdcli.preprocess import Preprocess
from ssdcli.priors import PriorSpec

TORCHVISION_SSDLITE_NMS_IOU = 0.55  # torchvision's ssdlite320_mobilenet_v3_large: nms_thresh=0.55

LAYOUT = "torchvision ssdlite320_mobilenet_v3_large"
C4 = 13  # index of MobileNetV3-Large's last stride-2 block (where torchvision splits the trunk)
PRIORS_PER_LOCATION = (6, 6, 6, 6, 6, 6)
FEATURE_MAPS = (20, 10, 5, 3, 2, 1)
MIN_RATIO, MAX_RATIO = 0.2, 0.95


def torchvision_ssdlite_scales() -> list[float]:
    """``DefaultBoxGenerator``'s scales for 6 outputs, computed exactly as torchvision does."""
    m = len(FEATURE_MAPS)
    return [MIN_RATIO + (MAX_RATIO - MIN_RATIO) * k / (m - 1.0) for k in range(m)] + [1.0]


def torchvision_ssdlite_priors() -> PriorSpec:
    scales = torchvision_ssdlite_scales()
    return PriorSpec(
        image_size=320,
        feature_maps=FEATURE_MAPS,
        min_sizes=tuple(s * 320 for s in scales[:-1]),
        max_sizes=tuple(s * 320 for s in scales[1:]),
        aspect_ratios=tuple((2.0, 3.0) for _ in FEATURE_MAPS),
        steps=None,
        clip=True,
        clip_centers=False,  # torchvision clamps only widths/heights (all centres lie inside anyway)
    )


TORCHVISION_SSDLITE_PREPROCESS = Preprocess(
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), channel_order="RGB", pixel_scale=1 / 255
)

_CLS = "head.classification_head.module_list."
_REG = "head.regression_head.module_list."


def _body_c4(m: re.Match) -> str:
    return f"backbone.body.{C4}.block.0.{m[1]}"


_RULES_TO_OURS = [
    (re.compile(rf"backbone\.features\.0\.{C4}\.(.+)"), _body_c4),
    (re.compile(r"backbone\.features\.0\.(\d+)\.(.+)"), lambda m: f"backbone.body.{m[1]}.{m[2]}"),
    (re.compile(r"backbone\.features\.1\.0\.(\d+)\.(.+)"), lambda m: f"backbone.body.{C4}.block.{m[1]}.{m[2]}"),
    (re.compile(r"backbone\.features\.1\.(\d+)\.(.+)"), lambda m: f"backbone.body.{C4 + int(m[1])}.{m[2]}"),
    (re.compile(r"backbone\.extra\.(.+)"), lambda m: f"backbone.extras.{m[1]}"),
    (re.compile(re.escape(_REG) + r"(.+)"), lambda m: f"loc.{m[1]}"),
    (re.compile(re.escape(_CLS) + r"(.+)"), lambda m: f"conf.{m[1]}"),
]


def _body_source(index: int, rest: str) -> str:
    if index < C4:
        return f"backbone.features.0.{index}.{rest}"
    if index > C4:
        return f"backbone.features.1.{index - C4}.{rest}"
    block = re.fullmatch(r"block\.(\d+)\.(.+)", rest)
    if block and block[1] == "0":
        return f"backbone.features.0.{C4}.{block[2]}"
    return f"backbone.features.1.0.{block[1]}.{block[2]}" if block else f"backbone.features.?.{rest}"


_RULES_FROM_OURS = [
    (re.compile(r"backbone\.body\.(\d+)\.(.+)"), lambda m: _body_source(int(m[1]), m[2])),
    (re.compile(r"backbone\.extras\.(.+)"), lambda m: f"backbone.extra.{m[1]}"),
    (re.compile(r"loc\.(.+)"), lambda m: _REG + m[1]),
    (re.compile(r"conf\.(.+)"), lambda m: _CLS + m[1]),
]


def rename(key: str) -> str | None:
    """torchvision key -> our ``ssdlite320`` key (None if the key has no place in the layout)."""
    return apply_rename_rules(_RULES_TO_OURS, key)


def source_name(our_key: str) -> str:
    """Inverse of :func:`rename`, for naming missing keys in torchvision's terms."""
    return apply_rename_rules(_RULES_FROM_OURS, our_key) or our_key


def is_torchvision_ssdlite(state: Mapping[str, torch.Tensor]) -> bool:
    return f"{_CLS}0.1.weight" in state and f"{_CLS}0.0.0.weight" in state and "backbone.features.0.0.0.weight" in state


def num_classes_of(state: Mapping[str, torch.Tensor], source: str) -> int:
    counts = set()
    for i, a in enumerate(PRIORS_PER_LOCATION):
        w = state.get(f"{_CLS}{i}.1.weight")
        if w is None or w.dim() != 4 or w.shape[0] % a:
            raise SsdError(
                f"{source}: does not match the {LAYOUT} layout: {_CLS}{i}.1.weight missing or not [{a}*C, cin, 1, 1]"
            )
        counts.add(w.shape[0] // a)
    if len(counts) != 1:
        raise SsdError(f"{source}: classification heads disagree on the class count ({sorted(counts)})")
    return counts.pop()


def has_reduced_tail(state: Mapping[str, torch.Tensor], source: str) -> bool:
    """True for the half-width last stage (torchvision's COCO model: final conv 80 -> 480 channels)."""
    last = state.get("backbone.features.1.3.0.weight")
    if last is None or last.dim() != 4 or last.shape[0] not in (480, 960):
        raise SsdError(f"{source}: does not match the {LAYOUT} layout: backbone.features.1.3.0.weight missing or "
                       f"not a 480- or 960-channel 1x1 convolution")
    return last.shape[0] == 480


def convert_torchvision_ssdlite(
    state: Mapping[str, torch.Tensor], classes: str | None, source: str
) -> tuple[DetectorModel, list[str]]:
    """Build the native ``ssdlite320`` equivalent of a torchvision SSDLite state dict. Returns (model, notes)."""
    num_classes = num_classes_of(state, source)
    reduced = has_reduced_tail(state, source)
    names = resolve_class_names(classes, num_classes, "coco" if num_classes in (81, 91) else None, source)
    spec = torchvision_ssdlite_priors()
    model = build_model(
        "ssdlite320",
        num_classes,
        class_names=names,
        preprocess=TORCHVISION_SSDLITE_PREPROCESS,
        extra={"prior_spec": spec.to_dict(), "reduced_tail": reduced},
    )
    transfer(model, state, rename, source, LAYOUT, source_name=source_name)
    model.config.nms_threshold = TORCHVISION_SSDLITE_NMS_IOU
    unnamed = sum(n.startswith("N/A-") for n in names)
    notes = [
        f"{LAYOUT}: {len(state)} tensors -> ssdlite320"
        + (" (reduced tail: last MobileNetV3 stage at half width, 480 channels)" if reduced else "")
        + f", {num_classes} classes (background + {num_classes - 1}"
        + (f", {unnamed} unused COCO id slots named N/A-<id>)" if unnamed else ")"),
        ("preprocessing: RGB, 0..1 pixels normalised to [-1, 1] (mean 0.5, std 0.5), warped to 320x320 "
         "(torchvision's GeneralizedRCNNTransform)"),
        (f"priors: torchvision DefaultBoxGenerator (min_ratio {MIN_RATIO}, max_ratio {MAX_RATIO}, clip), "
         f"{spec.num_priors()} priors in its order"),
    ]
    return model.eval(), notes
