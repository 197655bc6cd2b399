"""The prepared-dataset format shared by ``prepare-voc``, ``train``, ``eval`` and ``detect``.

A prepared folder holds ``manifest.json`` and one ``<split>.jsonl`` per split. Each JSONL line is one image::

    {"id": "000005", "file": "JPEGImages/000005.jpg", "width": 500, "height": 375,
     "boxes": [[263, 211, 324, 339], ...], "labels": [9, ...], "difficult": [0, ...]}

``file`` is relative to ``manifest["image_root"]`` (absolute). ``labels`` are 1-based indices into
``manifest["classes"]`` (index 0 is the implicit background). Boxes use the project's pixel convention (see
:mod:`ssdcli.boxes`): ``xmin, ymin, xmax, ymax`` exactly as written in VOC XML (1-based, inclusive pixels).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssdcli.errors import SsdError

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "ssdcli-prepared"


@dataclass
class ImageRecord:
    id: str
    path: str  # absolute path of the image file
    width: int
    height: int
    boxes: np.ndarray  # float32 [K,4], VOC pixel convention
    labels: np.ndarray  # int64 [K], 1-based
    difficult: np.ndarray  # bool [K]

    def to_json(self, image_root: str) -> dict:
        return {
            "id": self.id,
            "file": os.path.relpath(self.path, image_root),
            "width": int(self.width),
            "height": int(self.height),
            "boxes": [[round(float(v), 3) for v in b] for b in self.boxes],
            "labels": [int(v) for v in self.labels],
            "difficult": [int(v) for v in self.difficult],
        }

    @classmethod
    def from_json(cls, d: dict, image_root: str) -> "ImageRecord":
        boxes = np.asarray(d.get("boxes", []), dtype=np.float32).reshape(-1, 4)
        return cls(
            id=str(d["id"]),
            path=os.path.join(image_root, d["file"]),
            width=int(d["width"]),
            height=int(d["height"]),
            boxes=boxes,
            labels=np.asarray(d.get("labels", []), dtype=np.int64).reshape(-1),
            difficult=np.asarray(d.get("difficult", [0] * len(boxes)), dtype=bool).reshape(-1),
        )


@dataclass
class PreparedDataset:
    root: Path
    classes: list[str]  # foreground class names; label i (1-based) is classes[i-1]
    image_root: str
    splits: dict[str, list[ImageRecord]] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def split(self, name: str) -> list[ImageRecord]:
        if name not in self.splits:
            raise SsdError(f"{self.root}: no split '{name}' (available: {', '.join(sorted(self.splits)) or 'none'})")
        return self.splits[name]


def write_split(path: Path, records: list[ImageRecord], image_root: str) -> None:
    """Write one split index atomically."""
    from ssdcli.io_utils import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r.to_json(image_root)) + "\n" for r in records))


def load_prepared(root: str | os.PathLike, splits: list[str] | None = None) -> PreparedDataset:
    """Read a prepared folder written by ``ssd prepare-voc`` (only the requested splits, all by default)."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise SsdError(f"{root}: prepared dataset folder not found (run `ssd prepare-voc` first)")
    if not manifest_path.is_file():
        raise SsdError(f"{root}: no {MANIFEST_NAME}; not a prepared dataset (run `ssd prepare-voc` first)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SsdError(f"{manifest_path}: unreadable manifest ({e})") from None
    if manifest.get("format") != FORMAT_NAME:
        raise SsdError(f"{manifest_path}: not an ssdcli prepared-dataset manifest")
    image_root = manifest["image_root"]
    ds = PreparedDataset(root=root, classes=list(manifest["classes"]), image_root=image_root, manifest=manifest)
    for name, info in manifest.get("splits", {}).items():
        if splits is not None and name not in splits:
            continue
        split_path = root / info["file"]
        try:
            with open(split_path) as f:
                ds.splits[name] = [ImageRecord.from_json(json.loads(line), image_root) for line in f if line.strip()]
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise SsdError(f"{split_path}: unreadable split index ({e})") from None
    return ds
