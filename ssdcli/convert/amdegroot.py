"""``ssd.pytorch`` (github.com/amdegroot/ssd.pytorch) SSD300 state dicts -> native ``ssd300`` models.

Source layout (``build_ssd('train', 300, C)``)::

    vgg.N.{weight,bias}      N in 0,2,5,7,10,12,14,17,19,21,24,26,28 (conv1_1..conv5_3), 31 (conv6), 33 (conv7)
    L2Norm.weight            [512]
    extras.0..7.{weight,bias}  1x1 / 3x3 pairs; ReLU applied functionally; a source after every odd index
    loc.0..5, conf.0..5      3x3 heads, 4/6/6/6/4/4 priors per location

Our ``backbone.vgg`` has the same indices; ``extras.{2i}`` -> ``backbone.extras.{i}.0`` and ``extras.{2i+1}`` ->
``backbone.extras.{i}.2``; ``L2Norm.weight`` -> ``backbone.l2norm.weight``; ``loc``/``conf`` keep their indices.
The network was trained on Caffe-style input (BGR, mean 104/117/123 subtracted from 0..255 pixels, no std
scaling): recorded as :data:`ssdcli.preprocess.CAFFE_BGR`. Priors: the port uses its ``voc`` config when the
model has 21 classes and its ``coco`` config (smaller min sizes) otherwise; the same choice is made here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ssdcli.convert.classes import resolve_class_names
from ssdcli.convert.common import transfer
from ssdcli.errors import SsdError
from ssdcli.models.base import DetectorModel
from ssdcli.models.registry import build_model
from ssdcli.models.ssd.priors import SSD300_VOC
from ssdcli.preprocess import CAFFE_BGR
from ssdcli.priors import PriorSpec

FORMAT = "amdegroot"
LAYOUT = "ssd.pytorch SSD300"
PRIORS_PER_LOCATION = (4, 6, 6, 6, 4, 4)

# ssd.pytorch data/config.py `coco`: used by its SSD class whenever num_classes != 21.
AMDEGROOT_COCO_PRIORS = PriorSpec(
    image_size=300,
    feature_maps=(38, 19, 10, 5, 3, 1),
    steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(21, 45, 99, 153, 207, 261),
    max_sizes=(45, 99, 153, 207, 261, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
)

_EXTRAS = re.compile(r"extras\.(\d+)\.(weight|bias)")
_OUR_EXTRAS = re.compile(r"backbone\.extras\.(\d+)\.([02])\.(weight|bias)")


def is_amdegroot(state: Mapping[str, torch.Tensor]) -> bool:
    return "L2Norm.weight" in state and "vgg.0.weight" in state and "conf.0.weight" in state


def rename(key: str) -> str | None:
    """ssd.pytorch key -> our ``ssd300`` key (None if the key has no place in the layout)."""
    if key == "L2Norm.weight":
        return "backbone.l2norm.weight"
    if key.startswith("vgg."):
        return "backbone." + key
    m = _EXTRAS.fullmatch(key)
    if m:
        i = int(m.group(1))
        return f"backbone.extras.{i // 2}.{0 if i % 2 == 0 else 2}.{m.group(2)}"
    if key.startswith(("loc.", "conf.")):
        return key
    return None


def source_name(our_key: str) -> str:
    """Inverse of :func:`rename` (for naming missing keys in the source's terms)."""
    if our_key == "backbone.l2norm.weight":
        return "L2Norm.weight"
    m = _OUR_EXTRAS.fullmatch(our_key)
    if m:
        return f"extras.{2 * int(m.group(1)) + (m.group(2) == '2')}.{m.group(3)}"
    return our_key.removeprefix("backbone.")


def num_classes_of(state: Mapping[str, torch.Tensor], source: str) -> int:
    """Class count (background included) from the conf heads; checks all six heads agree."""
    counts = set()
    for i, a in enumerate(PRIORS_PER_LOCATION):
        w = state.get(f"conf.{i}.weight")
        if w is None or w.dim() != 4 or w.shape[0] % a:
            raise SsdError(
                f"{source}: does not match the {LAYOUT} layout: conf.{i}.weight missing or not [{a}*C, cin, 3, 3] "
                f"(found keys {', '.join(list(state)[:3])}, ...)"
            )
        counts.add(w.shape[0] // a)
    if len(counts) != 1:
        raise SsdError(f"{source}: conf heads disagree on the class count ({sorted(counts)})")
    return counts.pop()


def convert_amdegroot(
    state: Mapping[str, torch.Tensor], classes: str | None, source: str
) -> tuple[DetectorModel, list[str]]:
    """Build the native ``ssd300`` equivalent of an ssd.pytorch state dict. Returns (model, notes)."""
    num_classes = num_classes_of(state, source)
    names = resolve_class_names(classes, num_classes, "voc" if num_classes == 21 else "coco", source)
    spec = SSD300_VOC if num_classes == 21 else AMDEGROOT_COCO_PRIORS
    model = build_model(
        "ssd300", num_classes, class_names=names, preprocess=CAFFE_BGR, extra={"prior_spec": spec.to_dict()}
    )
    transfer(model, state, rename, source, LAYOUT, source_name=source_name)
    notes = [
        f"{LAYOUT}: {len(state)} tensors -> ssd300, {num_classes} classes (background + {num_classes - 1})",
        "preprocessing: BGR, mean (104, 117, 123) subtracted from 0..255 pixels, no std scaling (as trained)",
        f"priors: ssd.pytorch '{'voc' if num_classes == 21 else 'coco'}' config "
        f"(min sizes {', '.join(f'{s:g}' for s in spec.min_sizes)}), {spec.num_priors()} priors in its order",
    ]
    return model.eval(), notes
