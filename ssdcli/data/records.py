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

from ssdcli.errors import SsdError, first_line
from ssdcli.io_utils import atomic_write_text

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "ssdcli-prepared"


class RecordError(ValueError):
    """A prepared-index entry that is not what ``prepare-voc`` writes (the message says what is wrong)."""


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
    def from_json(cls, d: dict, image_root: str, num_classes: int | None = None) -> ImageRecord:
        """One JSONL entry -> record. Raises :class:`RecordError` (with what is wrong) for any malformed entry; labels are
        checked against ``num_classes`` when given."""
        if not isinstance(d, dict):
            raise RecordError(f"expected a JSON object, got {type(d).__name__}")
        missing = [k for k in ("id", "file", "width", "height") if k not in d]
        if missing:
            raise RecordError(f"missing key(s) {', '.join(missing)}")
        if not isinstance(d["file"], str) or not d["file"] or not isinstance(d["id"], (str, int)):
            raise RecordError("'id' and 'file' must be text")
        width, height = _positive_int(d["width"], "width"), _positive_int(d["height"], "height")
        boxes = _number_array(d.get("boxes", []), "boxes", np.float32)
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise RecordError(f"'boxes' must be a list of [xmin, ymin, xmax, ymax], got shape {list(boxes.shape)}")
        boxes = boxes.reshape(-1, 4)
        if not np.isfinite(boxes).all():
            raise RecordError("'boxes' holds NaN or infinite numbers")
        labels = _number_array(d.get("labels", []), "labels", np.float64).reshape(-1)
        if labels.size != len(boxes) or (labels != np.round(labels)).any():
            raise RecordError(f"'labels' must be {len(boxes)} integers (one per box), got {labels.size} numbers")
        if labels.size and (labels.min() < 1 or (num_classes is not None and labels.max() > num_classes)):
            raise RecordError(f"'labels' must lie in 1..{num_classes or 'number of classes'}")
        difficult = _number_array(d.get("difficult", [0] * len(boxes)), "difficult", np.float64).reshape(-1)
        if difficult.size != len(boxes):
            raise RecordError(f"'difficult' must hold {len(boxes)} values (one per box), got {difficult.size}")
        return cls(
            id=str(d["id"]),
            path=os.path.join(image_root, d["file"]),
            width=width,
            height=height,
            boxes=boxes,
            labels=labels.astype(np.int64),
            difficult=difficult.astype(bool),
        )


def _positive_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 31:
        raise RecordError(f"'{key}' must be a positive integer, got {str(value)[:40]!r}")
    return value


def _number_array(value: object, key: str, dtype) -> np.ndarray:
    if not isinstance(value, list):
        raise RecordError(f"'{key}' must be a list, got {type(value).__name__}")
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise RecordError(f"'{key}' must hold numbers only (nested as documented)") from None
    if arr.dtype == object or any(isinstance(v, (str, bool)) for v in _flat(value)):
        raise RecordError(f"'{key}' must hold numbers only")
    return arr


def _flat(value: list) -> list:
    return [x for v in value for x in (v if isinstance(v, list) else [v])]


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

    atomic_write_text(path, "".join(json.dumps(r.to_json(image_root)) + "\n" for r in records))


def load_prepared(root: str | os.PathLike, splits: list[str] | None = None) -> PreparedDataset:
    """Read a prepared folder written by ``ssd prepare-voc`` (only the requested splits, all by default).

    Any damage (unreadable or garbled manifest, wrong types, missing split files, bad JSON lines, boxes of the
    wrong shape, labels out of range...) raises one :class:`SsdError` naming the file (and line)."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise SsdError(f"{root}: prepared dataset folder not found (run `ssd prepare-voc` first)")
    if not manifest_path.is_file():
        raise SsdError(f"{root}: no {MANIFEST_NAME}; not a prepared dataset (run `ssd prepare-voc` first)")
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise SsdError(f"{manifest_path}: not an ssdcli prepared-dataset manifest")
    classes, image_root, split_infos = manifest.get("classes"), manifest.get("image_root"), manifest.get("splits", {})
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise SsdError(f"{manifest_path}: damaged manifest: 'classes' must be a non-empty list of names")
    if not isinstance(image_root, str) or not image_root:
        raise SsdError(f"{manifest_path}: damaged manifest: 'image_root' must be a folder path")
    if not isinstance(split_infos, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("file"), str) and v["file"] for v in split_infos.values()
    ):
        raise SsdError(f"{manifest_path}: damaged manifest: 'splits' must map names to {{\"file\": ...}}")
    ds = PreparedDataset(root=root, classes=list(classes), image_root=image_root, manifest=manifest)
    for name, info in split_infos.items():
        if splits is not None and name not in splits:
            continue
        ds.splits[name] = _read_split(root / info["file"], image_root, len(classes))
    return ds


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SsdError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, huge integers, deep nesting
        raise SsdError(f"{path}: unreadable manifest ({first_line(e)})") from None


def _read_split(path: Path, image_root: str, num_classes: int) -> list[ImageRecord]:
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(ImageRecord.from_json(json.loads(line), image_root, num_classes))
                except (ValueError, RecursionError) as e:
                    raise SsdError(f"{path}: line {number}: unreadable image entry ({first_line(e)})") from None
    except OSError as e:
        raise SsdError(f"{path}: unreadable split index ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise SsdError(f"{path}: unreadable split index ({first_line(e)})") from None
    return records
