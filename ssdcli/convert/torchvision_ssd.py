"""torchvision ``ssd300_vgg16`` state dicts -> native ``ssd300`` models with torchvision's priors and input.

Key mapping (torchvision -> ours)::

    backbone.features.N.*              -> backbone.vgg.N.*          conv1_1 .. conv4_3 (+ ReLUs), N <= 22
    backbone.scale_weight              -> backbone.l2norm.weight    per-channel scale of the L2-normalised conv4_3
    backbone.extra.0.K.*               -> backbone.vgg.{23+K}.*     pool4, conv5_1..conv5_3
    backbone.extra.0.7.K.*             -> backbone.vgg.{30+K}.*     pool5 (3x3 s1), conv6 (dilation 6), conv7
    backbone.extra.J.K.* (J >= 1)      -> backbone.extras.{J-1}.K.*
    head.regression_head.module_list.i -> loc.i
    head.classification_head.module_list.i -> conf.i

Both heads flatten ``[N, A*K, H, W]`` as ``(H, W, A, K)``, so prior order is the same. torchvision's
``DefaultBoxGenerator`` (scales 0.07..1.05, steps 8..300, clip of the width/height) is expressed as a
:class:`~ssdcli.priors.PriorSpec` with ``min_size_k = scale_k * 300``, ``max_size_k = scale_{k+1} * 300``; its
box coder weights (10, 10, 5, 5) are our variances (0.1, 0.2). Its ``GeneralizedRCNNTransform`` normalises
0..1 RGB with mean (0.48235, 0.45882, 0.40784) and std 1/255, i.e. subtracts the Caffe means from 0..255 pixels.
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

FORMAT = "torchvision"
LAYOUT = "torchvision ssd300_vgg16"
PRIORS_PER_LOCATION = (4, 6, 6, 6, 4, 4)
TORCHVISION_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)

_SPEC_ARGS = dict(
    image_size=300,
    feature_maps=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=tuple(round(s * 300, 6) for s in TORCHVISION_SCALES[:-1]),
    max_sizes=tuple(round(s * 300, 6) for s in TORCHVISION_SCALES[1:]),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
    clip=True,
)
# torchvision clips only the widths/heights to [0, 1]; centres of the 10x10 map's last row/column lie at
# 9.5 / 9.375 = 1.0133, which ``clip_centers=False`` keeps (the classic ports clamp them to 1.0).
TORCHVISION_SSD300_PRIORS = PriorSpec(**_SPEC_ARGS, clip_centers=False)


def torchvision_prior_dict() -> dict:
    """The prior spec as stored in ``config.extra["prior_spec"]``."""
    return TORCHVISION_SSD300_PRIORS.to_dict()


TORCHVISION_SSD_PREPROCESS = Preprocess(
    mean=(0.48235, 0.45882, 0.40784), std=(1 / 255, 1 / 255, 1 / 255), channel_order="RGB", pixel_scale=1 / 255
)

_CLS = "head.classification_head.module_list."
_REG = "head.regression_head.module_list."
_RULES_TO_OURS = [
    (re.compile(r"backbone\.features\.(\d+)\.(.+)"), lambda m: f"backbone.vgg.{m[1]}.{m[2]}"),
    (re.compile(r"backbone\.scale_weight"), lambda m: "backbone.l2norm.weight"),
    (re.compile(r"backbone\.extra\.0\.7\.(\d+)\.(.+)"), lambda m: f"backbone.vgg.{30 + int(m[1])}.{m[2]}"),
    (re.compile(r"backbone\.extra\.0\.(\d+)\.(.+)"), lambda m: f"backbone.vgg.{23 + int(m[1])}.{m[2]}"),
    (re.compile(r"backbone\.extra\.(\d+)\.(\d+)\.(.+)"), lambda m: f"backbone.extras.{int(m[1]) - 1}.{m[2]}.{m[3]}"),
    (re.compile(re.escape(_REG) + r"(.+)"), lambda m: f"loc.{m[1]}"),
    (re.compile(re.escape(_CLS) + r"(.+)"), lambda m: f"conf.{m[1]}"),
]


def _vgg_source(index: int) -> str:
    if index <= 22:
        return f"backbone.features.{index}"
    if index < 30:
        return f"backbone.extra.0.{index - 23}"
    return f"backbone.extra.0.7.{index - 30}"


_RULES_FROM_OURS = [
    (re.compile(r"backbone\.vgg\.(\d+)\.(.+)"), lambda m: f"{_vgg_source(int(m[1]))}.{m[2]}"),
    (re.compile(r"backbone\.l2norm\.weight"), lambda m: "backbone.scale_weight"),
    (re.compile(r"backbone\.extras\.(\d+)\.(.+)"), lambda m: f"backbone.extra.{int(m[1]) + 1}.{m[2]}"),
    (re.compile(r"loc\.(.+)"), lambda m: _REG + m[1]),
    (re.compile(r"conf\.(.+)"), lambda m: _CLS + m[1]),
]


def rename(key: str) -> str | None:
    """torchvision key -> our ``ssd300`` key (None if the key has no place in the layout)."""
    return apply_rename_rules(_RULES_TO_OURS, key)


def source_name(our_key: str) -> str:
    """Inverse of :func:`rename`, for naming missing keys in torchvision's terms."""
    return apply_rename_rules(_RULES_FROM_OURS, our_key) or our_key


def is_torchvision_ssd300(state: Mapping[str, torch.Tensor]) -> bool:
    return "backbone.scale_weight" in state and f"{_CLS}0.weight" in state and "backbone.features.0.weight" in state


def num_classes_of(state: Mapping[str, torch.Tensor], source: str) -> int:
    counts = set()
    for i, a in enumerate(PRIORS_PER_LOCATION):
        w = state.get(f"{_CLS}{i}.weight")
        if w is None or w.dim() != 4 or w.shape[0] % a:
            raise SsdError(
                f"{source}: does not match the {LAYOUT} layout: {_CLS}{i}.weight missing or not [{a}*C, cin, 3, 3] "
                f"(found keys {', '.join(list(state)[:3])}, ...)"
            )
        counts.add(w.shape[0] // a)
    if len(counts) != 1:
        raise SsdError(f"{source}: classification heads disagree on the class count ({sorted(counts)})")
    return counts.pop()


def convert_torchvision_ssd(
    state: Mapping[str, torch.Tensor], classes: str | None, source: str
) -> tuple[DetectorModel, list[str]]:
    """Build the native ``ssd300`` equivalent of a torchvision ``ssd300_vgg16`` state dict. Returns (model, notes)."""
    num_classes = num_classes_of(state, source)
    names = resolve_class_names(classes, num_classes, "coco" if num_classes in (81, 91) else None, source)
    spec = TORCHVISION_SSD300_PRIORS
    model = build_model(
        "ssd300",
        num_classes,
        class_names=names,
        preprocess=TORCHVISION_SSD_PREPROCESS,
        extra={"prior_spec": torchvision_prior_dict()},
    )
    transfer(model, state, rename, source, LAYOUT, source_name=source_name)
    unnamed = sum(n.startswith("N/A-") for n in names)
    notes = [
        f"{LAYOUT}: {len(state)} tensors -> ssd300, {num_classes} classes (background + {num_classes - 1}"
        + (f", {unnamed} unused COCO id slots named N/A-<id>)" if unnamed else ")"),
        "preprocessing: RGB, mean (0.48235, 0.45882, 0.40784) x 255 subtracted from 0..255 pixels, no std scaling "
        "(torchvision's GeneralizedRCNNTransform)",
        f"priors: torchvision DefaultBoxGenerator (scales {', '.join(f'{s:g}' for s in TORCHVISION_SCALES)}), "
        f"{spec.num_priors()} priors in its order",
    ]
    return model.eval(), notes
