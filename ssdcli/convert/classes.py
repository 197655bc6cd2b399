"""Class-name lists for converted checkpoints: built-in VOC / COCO lists or a names file.

All lists are foreground names (background excluded), index ``i`` naming class ``i + 1``.
"""

from __future__ import annotations

from ssdcli.data.class_names import read_class_file
from ssdcli.data.voc import VOC_CLASSES  # one list for the whole project
from ssdcli.errors import SsdError


def coco_category_slots() -> list[str]:
    """torchvision's 90 COCO category slots (ids 1..90, as its detection models predict them).

    The 10 ids COCO never used are named ``N/A-<id>`` so every name is unique.
    """
    from torchvision.models.detection.ssd import SSD300_VGG16_Weights

    cats = list(SSD300_VGG16_Weights.COCO_V1.meta["categories"])  # 91 entries, [0] = "__background__"
    return [name if name != "N/A" else f"N/A-{i}" for i, name in enumerate(cats)][1:]


def coco80_classes() -> list[str]:
    """The 80 COCO object categories in category-id order (the contiguous 80-class labelling)."""
    return [c for c in coco_category_slots() if not c.startswith("N/A-")]


def builtin_classes(name: str, num_classes: int) -> list[str] | None:
    """``voc`` / ``coco`` lists; ``coco`` means the 90 category slots for a 91-output model, else the 80 classes."""
    if name == "voc":
        return list(VOC_CLASSES)
    if name == "coco":
        return coco_category_slots() if num_classes == 91 else coco80_classes()
    return None


def resolve_class_names(spec: str | None, num_classes: int, default: str | None, source: str) -> list[str]:
    """Class names for a converted model predicting ``num_classes`` outputs (background included).

    ``spec`` is ``voc``, ``coco``, a names file, or None (use ``default`` when it fits the class count).
    """
    if spec is None:
        names = builtin_classes(default, num_classes) if default else None
        if names is None or len(names) != num_classes - 1:
            raise SsdError(
                f"{source}: the model predicts {num_classes} classes (background included) and no built-in list "
                f"fits; pass --classes FILE with {num_classes - 1} names, one per line"
            )
        return names
    names = builtin_classes(spec, num_classes)
    label = f"--classes {spec}"
    if names is None:
        names = read_class_file(spec, "--classes", drop_leading_background=True)
    if len(names) != num_classes - 1:
        raise SsdError(
            f"{source}: class-count mismatch: the model predicts {num_classes} classes (background included) "
            f"but {label} names {len(names)} (expected {num_classes - 1})"
        )
    return names
