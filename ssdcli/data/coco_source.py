"""``prepare-coco`` as a library call: COCO instance JSON files + image folders -> the prepared folder of ``prepare-voc``.

Box conversion (COCO ``bbox`` is ``[x, y, w, h]`` in continuous pixel coordinates, ``(0, 0)`` the top-left corner of
the image) to the project's pixel convention (:mod:`ssdcli.boxes`, pixel ``i`` covers ``[i-1, i]``)::

    xmin = x + 1,   ymin = y + 1,   xmax = x + w,   ymax = y + h

the exact inverse of :func:`ssdcli.metrics.coco.voc_to_coco_xywh`, so VOC boxes written out as COCO come back
identical and ``eval --metric coco`` hands pycocotools the source boxes. Boxes are then validated and clipped to
``[1, W] x [1, H]`` as VOC boxes are (:mod:`ssdcli.data.box_checks`), against the real image size read from the
file header (the JSON ``width``/``height`` are compared, not trusted).

Quirks handled and counted by kind (:data:`COCO_PROBLEM_KINDS`): float boxes, zero or negative box sizes, ``iscrowd``
(kept as an ignored region, the ``difficult`` flag of VOC, which the metrics treat as COCO treats crowds),
non-contiguous category ids and categories no annotation uses (a Roboflow-style supercategory entry with id 0 is not
made a class), duplicate category names, image id 0, duplicate image or annotation ids, a file listed twice,
annotations naming an image not in ``images``, images listed but missing on disk.

Layouts (:func:`find_coco_sources`): a JSON file; a folder with ``annotations/instances_<name>.json`` and images in
``<name>/`` (COCO 2017: ``train2017/``, ``val2017/``); a folder with ``train/``, ``valid/``, ``test/`` each holding
``_annotations.coco.json`` beside its images (dataset-site exports); a folder with one JSON; or explicit
``--train JSON[:IMAGES]`` / ``--val`` / ``--test``. Split names come from the file or folder name (``train``,
``val``/``valid``, ``test``); other files are split by ``--split`` (see :func:`ssdcli.data.prepare.finish_prepare`).
Record ids are image file names without the extension (the VOC ids of a VOC dataset written out as COCO).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssdcli.data.box_checks import check_pixel_boxes
from ssdcli.data.images import check_regular_file
from ssdcli.data.prepare import (
    UNASSIGNED,
    PrepareReport,
    SourceScan,
    Tally,
    check_split_options,
    finish_prepare,
    map_chunks,
)  # fmt: skip
from ssdcli.data.voc import PROBLEM_KINDS, ImageProblem, VocAnnotation, VocObject, read_image_info
from ssdcli.data.voc_layout import IMAGE_EXT_ORDER
from ssdcli.errors import SsdError, first_line
from ssdcli.reporting import Reporter, as_reporter

__all__ = ["COCO_PROBLEM_KINDS", "CocoSource", "find_coco_sources", "prepare_coco", "read_coco_json", "split_of"]

COCO_PROBLEM_KINDS: dict[str, tuple[str, str]] = {
    **PROBLEM_KINDS,
    "size_mismatch": ("warning", "JSON width/height differ from the image: real size used"),
    "size_missing": ("note", "JSON width/height missing, zero or negative: real size used"),
    "bad_image_entry": ("warning", "entry of 'images' without a usable id or file_name: skipped"),
    "duplicate_image_id": ("warning", "image id listed twice: the later entry ignored (annotations go to the first)"),
    "duplicate_image_file": ("warning", "file listed under two image ids: one image, annotations of both kept"),
    "image_id_zero": ("note", "image id 0 (falsy in some tools): read like any other id"),
    "bad_object": ("warning", "annotation that is not an object with a 4-number bbox: dropped"),
    "invalid_box": ("warning", "bbox with width or height <= 0 or unreadable numbers: dropped"),
    "annotation_without_image": ("warning", "annotation names an image id not in 'images': dropped"),
    "unknown_category": ("warning", "annotation category_id not in 'categories': dropped"),
    "duplicate_annotation_id": ("note", "annotation id used twice: both kept (ids are not used)"),
    "duplicate_category": ("warning", "category name listed under two ids: one class"),
    "unused_category": ("note", "category that no annotation uses (e.g. a supercategory entry): not made a class"),
    "crowd": ("note", "iscrowd annotation: kept as an ignored region (like VOC difficult)"),
    "float_coordinates": ("note", "non-integer bbox numbers: converted exactly (xmin = x + 1, xmax = x + w)"),
    "missing_image": ("warning", "image listed in the JSON but not found on disk: image skipped"),
    "split_overlap": ("warning", "image file in two of the train / val / test splits"),
    "all_boxes_invalid": ("warning", "no usable box among its annotations: image skipped, not kept as a negative"),
}
ANNOTATION_DIR = "annotations"
SITE_JSON = "_annotations.coco.json"  # the file name dataset-site exports put beside each split's images
_SKIP_JSON = ("person_keypoints", "captions", "panoptic", "image_info", "stuff")


@dataclass(frozen=True)
class CocoSource:
    split: str  # "train", "val", "test" or UNASSIGNED
    json_path: Path
    image_dir: Path | None  # None: found next to the JSON (see _image_dir)

    @property
    def label(self) -> str:
        return self.json_path.name if self.image_dir is None else f"{self.json_path.name}:{self.image_dir.name}"


def split_of(name: str) -> str:
    """Split named by a file or folder name: ``instances_train2017`` -> train, ``valid`` -> val, ``test``..."""
    n = name.lower()
    for key, split in (("train", "train"), ("val", "val"), ("test", "test")):
        if key in n:
            return split
    return UNASSIGNED


def find_coco_sources(root: Path, train=None, val=None, test=None) -> tuple[list[CocoSource], str]:
    """-> (sources, layout name). ``train``/``val``/``test``: ``"JSON[:IMAGES]"`` specs (override the layout)."""
    explicit = [(s, spec) for s, spec in (("train", train), ("val", val), ("test", test)) if spec]
    if explicit:
        return [_parse_spec(spec, split, root) for split, spec in explicit], "explicit"
    if root.is_file():
        return [CocoSource(split_of(root.stem) if root.suffix == ".json" else UNASSIGNED, root, None)], "json file"
    if not root.is_dir():
        raise SsdError(f"{root}: dataset not found")
    ann = root / ANNOTATION_DIR
    if ann.is_dir():
        files = sorted(p for p in ann.glob("*.json") if not p.name.startswith(_SKIP_JSON))
        if files:
            return [CocoSource(split_of(p.stem), p, None) for p in files], "annotations/"
    site = [root / d / SITE_JSON for d in sorted(os.listdir(root)) if (root / d / SITE_JSON).is_file()]
    if site:
        return [CocoSource(split_of(p.parent.name), p, p.parent) for p in site], "split folders"
    files = sorted(root.glob("*.json"))
    if len(files) == 1:
        return [CocoSource(split_of(files[0].stem), files[0], None)], "one json"
    if files:
        return [CocoSource(split_of(p.stem), p, None) for p in files], "json files"
    raise SsdError(f"{root}: no COCO JSON found (looked for annotations/*.json, */{SITE_JSON}, *.json); "
                   "give --train JSON[:IMAGES]")  # fmt: skip


def _parse_spec(spec: str, split: str, root: Path) -> CocoSource:
    text = str(spec)
    cut = text.lower().find(".json:")
    json_part, image_part = (text[: cut + 5], text[cut + 6 :]) if cut >= 0 else (text, "")
    base = root if root.is_dir() else Path(".")
    path = Path(json_part).expanduser()
    path = path if path.is_absolute() or path.exists() else base / path
    images = None
    if image_part:
        images = Path(image_part).expanduser()
        images = images if images.is_absolute() or images.exists() else base / images
        if not images.is_dir():
            raise SsdError(f"--{split} {spec}: image folder {images} not found")
    if not path.is_file():
        raise SsdError(f"--{split} {spec}: {path} not found")
    return CocoSource(split, path, images)


def read_coco_json(path: Path) -> tuple[list, list, list]:
    """-> (images, annotations, categories) lists of a COCO instance file. SsdError naming the file otherwise."""
    try:
        check_regular_file(str(path))
        with open(path, "rb") as f:
            data = json.load(f)
    except SsdError:
        raise
    except FileNotFoundError:
        raise SsdError(f"{path}: COCO JSON not found") from None
    except OSError as e:
        raise SsdError(f"{path}: cannot read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise SsdError(f"{path}: not valid JSON ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise SsdError(f"{path}: not a COCO instance file (top level is {type(data).__name__}, not an object)")
    parts = []
    for key in ("images", "annotations", "categories"):
        value = data.get(key)
        if not isinstance(value, list):
            what = "missing" if value is None else f"a {type(value).__name__}, not a list"
            raise SsdError(f"{path}: not a COCO instance file ('{key}' is {what})")
        parts.append(value)
    return parts[0], parts[1], parts[2]


def prepare_coco(
    source: str | os.PathLike | None,
    out: str | os.PathLike | None,
    *,
    train: str | None = None,
    val: str | None = None,
    test: str | None = None,
    classes: list[str] | str | None = None,
    verify_images: bool = False,
    strict: bool = False,
    workers: int | None = None,
    reporter: Reporter | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    split: str | tuple[float, float, float] | None = None,
) -> PrepareReport:
    """Validate COCO instance JSON data and write the prepared folder of :func:`ssdcli.data.prepare.prepare_voc`.

    ``source``: a JSON file or a folder in one of the layouts of :func:`find_coco_sources` (None with explicit
    ``train``/``val``/``test`` specs ``"JSON[:IMAGES]"``). ``classes``: None = the categories annotations use, in
    category-id order; a list or ``"a,b,c"``; ``"auto"`` (sorted names found). Other options, errors and the
    report: as :func:`~ssdcli.data.prepare.prepare_voc`.
    """
    check_split_options(val_fraction, split)
    start = time.perf_counter()
    root = Path(source).expanduser() if source is not None else Path(".")
    if source is not None and not root.exists():
        raise SsdError(f"{root}: dataset not found")
    root = root.resolve()
    sources, layout = find_coco_sources(root, train, val, test)
    base = root if root.is_dir() else root.parent
    tally = Tally(base, COCO_PROBLEM_KINDS)
    reader = _Reader(tally)
    loaded = [(s, *read_coco_json(s.json_path)) for s in sources]
    for s, images, anns, cats in loaded:
        reader.add_source(s, images, cats)
    reader.probe(verify_images, workers, as_reporter(reporter))
    for s, images, anns, cats in loaded:
        reader.add_annotations(s, anns)
    reader.finish_images()
    sets: dict[str, list[str]] = {}
    for s in sources:
        sets.setdefault(s.split, []).append(s.label)
    image_root = Path(os.path.commonpath([str(d) for d in reader.image_dirs])) if reader.image_dirs else base
    scan = SourceScan(base, image_root, layout, sets, reader.parsed, reader.split_items, tally,
                      reader.default_classes(), "categories",
                      {"format": "coco", "files": [str(s.json_path) for s in sources]})  # fmt: skip
    options = {"train": train, "val": val, "test": test, "verify_images": verify_images, "strict": strict}
    return finish_prepare(scan, out, classes=classes, strict=strict, val_fraction=val_fraction,
                          split_seed=split_seed, split=split, options=options, start=start)  # fmt: skip


def _probe_chunk(paths: list[str], verify: bool) -> list[tuple]:
    """Worker side: (width, height, orientation, raw_w, raw_h, problem kind, detail) of each image file."""
    out = []
    for p in paths:
        try:
            info = read_image_info(p, verify)
            out.append((info.width, info.height, info.orientation, *info.raw_size, None, ""))
        except ImageProblem as e:
            out.append((0, 0, 1, 0, 0, e.kind, str(e)))
    return out


class _Reader:
    """Images of every JSON (keyed ``(json path, entry index)``), then their annotations, vectorised."""

    def __init__(self, tally: Tally):
        self.tally = tally
        self.parsed: dict[tuple[str, int], VocAnnotation] = {}
        self.split_items: dict[str, list[tuple[str, int]]] = {}
        self.image_dirs: list[Path] = []
        self.by_id: dict[tuple[str, object], tuple[str, int]] = {}  # (json, image id) -> key
        self.json_size: dict[tuple[str, int], tuple[int | None, int | None]] = {}
        self.by_file: dict[tuple[str, str], tuple[str, int]] = {}  # (json, image path) -> key
        self.path_splits: dict[str, list[tuple[str, str]]] = {}  # image path -> [(split, json)]
        self.id_of_path: dict[str, str] = {}
        self.category_order: dict[str, float] = {}  # name -> smallest id seen (class order)
        self.categories: dict[str, dict] = {}  # json -> {category id: name}
        self.used: set[str] = set()
        self.ids_taken: set[str] = set()
        self.dropped: dict[tuple[str, int], int] = {}  # key -> annotations with unusable boxes

    # ---------------------------------------------------------------- images and categories
    def add_source(self, s: CocoSource, images: list, cats: list) -> None:
        js, tally = str(s.json_path), self.tally
        self.categories[js] = self._categories(js, cats)
        image_dir = s.image_dir or _image_dir(s.json_path, images)
        if image_dir not in self.image_dirs:
            self.image_dirs.append(image_dir)
        listing = _listing(image_dir)
        items = self.split_items.setdefault(s.split, [])
        for index, entry in enumerate(images):
            image_id = entry.get("id") if isinstance(entry, dict) else None
            file_name = entry.get("file_name") if isinstance(entry, dict) else None
            if not _is_id(image_id) or not isinstance(file_name, str) or not file_name.strip():
                tally.add("bad_image_entry", js, f"images[{index}]: {str(entry)[:80]}")
                continue
            if (js, image_id) in self.by_id:
                tally.add("duplicate_image_id", js, f"id {image_id}: {file_name}")
                continue
            if image_id == 0:
                tally.add("image_id_zero", js, f"id 0: {file_name}")
            path = _resolve_file(image_dir, file_name, listing)
            if (js, path) in self.by_file:
                first = self.by_file[(js, path)]
                self.by_id[(js, image_id)] = first
                tally.add("duplicate_image_file", js, f"id {image_id}: {file_name} (also image {first[1]})")
                continue
            key = (js, index)
            self.by_id[(js, image_id)] = key
            self.by_file[(js, path)] = key
            self.path_splits.setdefault(path, []).append((s.split, js))
            ann = VocAnnotation(id=self._record_id(file_name, path), annotation=js, image=path)
            self.parsed[key] = ann
            self.json_size[key] = (_size(entry.get("width")), _size(entry.get("height")))
            items.append(key)
            if not os.path.isfile(path):
                ann.fail("missing_image", js, f"{file_name}: not found in {image_dir}")

    def _categories(self, js: str, cats: list) -> dict:
        names, seen = {}, {}
        for c in cats:
            cid, name = (c.get("id"), c.get("name")) if isinstance(c, dict) else (None, None)
            if not _is_id(cid) or not isinstance(name, str) or not name.strip():
                continue
            name = name.strip()
            if name in seen and seen[name] != cid:
                self.tally.add("duplicate_category", js, f"'{name}' has ids {seen[name]} and {cid}")
            seen.setdefault(name, cid)
            names[cid] = name
            order = cid if isinstance(cid, int) else float("inf")
            self.category_order[name] = min(self.category_order.get(name, order), order)
        return names

    def _record_id(self, file_name: str, path: str) -> str:
        """The file name without extension; unique per file (the same file in two JSONs keeps one id)."""
        if path in self.id_of_path:
            return self.id_of_path[path]
        stem = os.path.splitext(file_name.replace("\\", "/").rsplit("/", 1)[-1])[0]
        rid = stem if stem not in self.ids_taken else os.path.splitext(file_name.replace("\\", "/"))[0]
        n = 2
        while rid in self.ids_taken:
            rid, n = f"{stem}~{n}", n + 1
        self.ids_taken.add(rid)
        self.id_of_path[path] = rid
        return rid

    def probe(self, verify: bool, workers: int | None, reporter: Reporter) -> None:
        keys = [k for k, a in self.parsed.items() if a.skip is None]
        results = map_chunks(_probe_chunk, [self.parsed[k].image for k in keys], verify, workers, reporter,
                             "read images")  # fmt: skip
        for key, (w, h, orientation, raw_w, raw_h, kind, detail) in zip(keys, results):
            ann = self.parsed[key]
            if kind is not None:
                ann.fail(kind, ann.image, detail)
                continue
            ann.width, ann.height = w, h
            jw, jh = self.json_size[key]
            if orientation != 1:
                ann.problem("exif_orientation", ann.image, f"EXIF orientation {orientation}: boxes taken as drawn "
                                                           "on the rotated image")  # fmt: skip
            if jw is None or jh is None:
                ann.problem("size_missing", ann.annotation, f"{ann.id}: using the real size {w}x{h}")
            elif (jw, jh) != (w, h) and (jw, jh) != (raw_w, raw_h):
                ann.problem("size_mismatch", ann.annotation, f"{ann.id}: JSON says {jw}x{jh}, image is {w}x{h}")

    # ---------------------------------------------------------------- annotations, vectorised
    def add_annotations(self, s: CocoSource, anns: list) -> None:
        """Every annotation of one JSON at once: lookups as list comprehensions, boxes and checks as arrays."""
        js, names = str(s.json_path), self.categories[str(s.json_path)]
        n = len(anns)
        dicts = anns if all(type(a) is dict for a in anns) else [a if isinstance(a, dict) else {} for a in anns]
        image_ids = [a.get("image_id") for a in dicts]
        keys = [self.by_id.get((js, i)) if type(i) in _ID_TYPES else None for i in image_ids]
        cats = [a.get("category_id") for a in dicts]
        cat_names = [names.get(c) if type(c) in _ID_TYPES else None for c in cats]
        boxes = _boxes(dicts)
        crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in dicts), bool, n)
        ann_ids = [a.get("id") for a in dicts]
        label = lambda i: f"annotation {ann_ids[i]} (image_id {image_ids[i]})"

        bad = np.isnan(boxes).any(axis=1)
        no_image = np.fromiter((k is None for k in keys), bool, n) & ~bad
        no_cat = np.fromiter((c is None for c in cat_names), bool, n) & ~bad & ~no_image
        self._count("bad_object", js, bad, lambda i: f"{label(i)}: bbox {str(dicts[i].get('bbox'))[:40]}")
        self._count("annotation_without_image", js, no_image, label)
        self._count("unknown_category", js, no_cat, lambda i: f"{label(i)}: category_id {cats[i]}")
        ids = np.fromiter((i if type(i) is int else -1 for i in ann_ids), np.int64, n)
        uniq, counts = np.unique(ids[ids >= 0], return_counts=True)
        self.tally.add_many("duplicate_annotation_id", js, int((counts[counts > 1] - 1).sum()),
                            (f"annotation id {i}" for i in uniq[counts > 1][:5]))  # fmt: skip

        skipped = {k for k, a in self.parsed.items() if a.skip is not None}
        usable = ~(bad | no_image | no_cat)
        usable &= np.fromiter((k not in skipped for k in keys), bool, n)  # a skipped image is counted once
        sel = np.flatnonzero(usable)
        if sel.size == 0:
            return
        sel_keys = [keys[i] for i in sel.tolist()]
        wh = np.asarray([(self.parsed[k].width, self.parsed[k].height) for k in sel_keys], np.float64).reshape(-1, 2)
        xywh = boxes[sel]
        pixel = np.stack([xywh[:, 0] + 1, xywh[:, 1] + 1, xywh[:, 0] + xywh[:, 2], xywh[:, 1] + xywh[:, 3]], axis=1)
        check = check_pixel_boxes(pixel, wh[:, 0], wh[:, 1])
        invalid = check.invalid | (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
        kept = ~invalid & ~check.outside
        at = lambda j: f"{label(sel[j])}: bbox {xywh[j].tolist()} in {int(wh[j, 0])}x{int(wh[j, 1])}"
        self._count("invalid_box", js, invalid, at)
        self._count("box_outside_image", js, check.outside & ~invalid, at)
        self._count("box_clipped", js, check.clipped & kept, at)
        self._count("box_edge", js, check.edge & kept, at)
        self._count("float_coordinates", js, kept & (xywh != np.round(xywh)).any(axis=1), at)
        self._count("crowd", js, kept & crowd[sel], lambda j: label(sel[j]))
        for j in np.flatnonzero(~kept).tolist():
            self.dropped[sel_keys[j]] = self.dropped.get(sel_keys[j], 0) + 1
        k_idx = np.flatnonzero(kept)
        kept_names = [cat_names[i] for i in sel[k_idx].tolist()]
        self.used.update(kept_names)
        objects = list(map(VocObject, kept_names, map(tuple, check.boxes[k_idx].tolist()), crowd[sel][k_idx].tolist()))
        for key, obj in zip((sel_keys[j] for j in k_idx.tolist()), objects):
            self.parsed[key].objects.append(obj)

    def _count(self, kind: str, js: str, mask: np.ndarray, detail) -> None:
        idx = np.flatnonzero(mask)
        self.tally.add_many(kind, js, int(idx.size), (detail(int(i)) for i in idx[:5]))

    def finish_images(self) -> None:
        """Image-level problems into the tally; images whose every box was unusable are skipped."""
        dropped = self.dropped
        for key, ann in self.parsed.items():
            if ann.skip is None and not ann.objects and dropped.get(key):
                ann.fail("all_boxes_invalid", ann.annotation, f"{ann.id}: {dropped[key]} annotation(s), none usable")
            for problem in ann.problems:
                self.tally.add(*problem)
        unused = {}
        for js, names in self.categories.items():
            for cid, name in names.items():
                if name not in self.used and name not in unused:
                    unused[name] = (js, cid)
        for name, (js, cid) in unused.items():
            self.tally.add("unused_category", js, f"id {cid} '{name}'")
        for path, where in self.path_splits.items():
            splits = sorted({split for split, _ in where if split != UNASSIGNED})
            if len(splits) > 1:
                self.tally.add("split_overlap", where[-1][1], f"{os.path.basename(path)} in {' and '.join(splits)}")

    def default_classes(self) -> list[str] | None:
        names = self.used or set(self.category_order)
        return sorted(names, key=lambda n: (self.category_order.get(n, float("inf")), n)) or None


_ID_TYPES = (int, str)  # image and category ids (exact types: a bool is no id)


def _boxes(dicts: list[dict]) -> np.ndarray:
    """``[N,4]`` float64 bboxes, a row of NaN where an entry is not a list of 4 plain numbers."""
    raw = [a.get("bbox") for a in dicts]
    if all(type(b) is list and len(b) == 4 for b in raw) and {type(v) for b in raw for v in b} <= {int, float}:
        return np.asarray(raw, np.float64).reshape(-1, 4)  # the usual case: one conversion
    return np.asarray([_box4(b) for b in raw], np.float64).reshape(-1, 4)


def _is_id(value: object) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _size(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != int(value):
        return None
    return int(value)


def _box4(b: object) -> tuple[float, float, float, float]:
    """A bbox as 4 floats, NaNs when it is not a list of 4 plain numbers."""
    if isinstance(b, (list, tuple)) and len(b) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in b
    ):
        return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
    return (np.nan, np.nan, np.nan, np.nan)


def _listing(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it}
    except OSError:
        return set()


def _resolve_file(image_dir: Path, file_name: str, listing: set[str]) -> str:
    """The image path of a ``file_name``: as given under ``image_dir``, else its base name there."""
    name = file_name.replace("\\", "/")
    if name in listing:
        return os.path.join(image_dir, name)
    path = os.path.join(image_dir, name)
    if "/" in name and not os.path.isfile(path):
        base = name.rsplit("/", 1)[-1]
        if base in listing:
            return os.path.join(image_dir, base)
    return path


def _image_dir(json_path: Path, images: list) -> Path:
    """The folder holding a JSON's images: the first of ``<root>/<name>``, ``<root>/images/<name>``,
    ``<root>/images``, the JSON's folder (``<root>`` = the folder above ``annotations/``, ``<name>`` the JSON
    name without ``instances_``) where the first listed images exist."""
    name = json_path.stem.removeprefix("instances_")
    folder = json_path.parent
    root = folder.parent if folder.name == ANNOTATION_DIR else folder
    candidates = [root / name, root / "images" / name, root / "images", folder, root]
    sample = [e["file_name"] for e in images[:20] if isinstance(e, dict) and isinstance(e.get("file_name"), str)]
    for c in candidates:
        if c.is_dir() and sample:
            listing = _listing(c)
            if any(os.path.isfile(_resolve_file(c, f, listing)) for f in sample[:5]):
                return c
    if sample:
        raise SsdError(f"{json_path}: its images ({sample[0]}...) are not in {', '.join(map(str, candidates[:4]))}; "
                       "give the folder: --train JSON:IMAGES (or --val / --test)")  # fmt: skip
    for c in candidates:
        if c.is_dir() and any(p.suffix.lower() in IMAGE_EXT_ORDER for p in _first_files(c)):
            return c
    return folder


def _first_files(folder: Path, n: int = 50) -> Iterable[Path]:
    with os.scandir(folder) as it:
        for i, e in enumerate(it):
            if i >= n:
                return
            yield Path(e.path)
