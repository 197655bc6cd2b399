"""A prepared dataset written back out as COCO instance JSON or as a YOLO dataset (the inverse of ``prepare-coco`` /
``prepare-yolo``; used by the round-trip tests, and to hand data to other tools).

Box conversions are the exact inverses of the readers' (:mod:`ssdcli.data.coco_source`,
:mod:`ssdcli.data.yolo_source`): COCO ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``; YOLO
``cx = (xmin - 1 + xmax) / 2 / W``, ``w = (xmax - xmin + 1) / W`` (likewise for y), written with 17 significant
digits so that the boxes read back agree to far below 1e-6 pixels. Splits are carried as one COCO file per split
(``annotations/instances_<split>.json``) or one YOLO image list per split (``<split>.txt``, named in
``data.yaml``). Difficult objects become ``iscrowd: 1`` in COCO; YOLO has no such flag, so they are written as
regular objects (the only loss of the YOLO format).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from ssdcli.data.records import PreparedDataset
from ssdcli.io_utils import atomic_write_text

__all__ = ["export_coco", "export_yolo"]


def _coco_xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0] - 1.0, b[:, 1] - 1.0, b[:, 2] - b[:, 0] + 1.0, b[:, 3] - b[:, 1] + 1.0], axis=1)


def export_coco(ds: PreparedDataset, out: str | os.PathLike, splits: list[str] | None = None) -> dict[str, Path]:
    """Write ``out/annotations/instances_<split>.json`` per split; ``file_name`` is relative to the dataset's
    ``image_root`` (give that folder as the images of ``prepare-coco --train JSON:IMAGES``). Image ids count
    from 0 (the id-0 quirk on purpose), category ids are the labels (1-based). -> split -> JSON path."""
    folder = Path(out) / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(ds.classes)]
    written = {}
    for split in splits or list(ds.splits):
        images, annotations = [], []
        for image_id, r in enumerate(ds.splits[split]):
            images.append({"id": image_id, "file_name": os.path.relpath(r.path, ds.image_root),
                           "width": int(r.width), "height": int(r.height)})  # fmt: skip
            xywh = _coco_xywh(r.boxes)
            for box, label, difficult in zip(xywh.tolist(), r.labels.tolist(), r.difficult.tolist()):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                    "bbox": box, "area": box[2] * box[3], "iscrowd": int(difficult),
                                    "segmentation": []})  # fmt: skip
        path = folder / f"instances_{split}.json"
        atomic_write_text(path, json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        written[split] = path
    return written


def export_yolo(ds: PreparedDataset, out: str | os.PathLike, *, link_images: bool = True) -> Path:
    """Write ``out/images/<split>/`` (symbolic links to the images, or copies), ``out/labels/<split>/*.txt``,
    ``out/<split>.txt`` (the split's images in record order, ``./images/...`` lines: the order survives, so
    training on the re-prepared set sees the same sequence) and ``out/data.yaml`` (``path: .``, ``train:
    train.txt``..., ``names`` as a list). -> the data.yaml path."""
    out = Path(out)
    for split, recs in ds.splits.items():
        listing = []
        image_dir, label_dir = out / "images" / split, out / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for r in recs:
            name = r.id.replace("/", "__") + os.path.splitext(r.path)[1]
            target = image_dir / name
            listing.append(f"./images/{split}/{name}\n")
            if not target.exists():
                if link_images:
                    target.symlink_to(os.path.abspath(r.path))
                else:
                    shutil.copyfile(r.path, target)
            b = np.asarray(r.boxes, np.float64).reshape(-1, 4)
            w, h = float(r.width), float(r.height)
            cx, cy = (b[:, 0] - 1 + b[:, 2]) / 2 / w, (b[:, 1] - 1 + b[:, 3]) / 2 / h
            bw, bh = (b[:, 2] - b[:, 0] + 1) / w, (b[:, 3] - b[:, 1] + 1) / h
            lines = [f"{int(c) - 1} {x!r} {y!r} {ww!r} {hh!r}\n" for c, x, y, ww, hh in
                     zip(r.labels.tolist(), cx.tolist(), cy.tolist(), bw.tolist(), bh.tolist())]  # fmt: skip
            atomic_write_text(label_dir / (os.path.splitext(name)[0] + ".txt"), "".join(lines))
        atomic_write_text(out / f"{split}.txt", "".join(listing))
    data = {"path": ".", **{s: f"{s}.txt" for s in ds.splits}, "names": list(ds.classes)}
    yaml_path = out / "data.yaml"
    atomic_write_text(yaml_path, yaml.safe_dump(data, sort_keys=False))
    return yaml_path
