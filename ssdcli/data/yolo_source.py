"""``prepare-yolo`` as a library call: a YOLO ``data.yaml`` (or ``images/`` + ``labels/`` folder) -> the prepared folder.

Box conversion: a YOLO label line ``class cx cy w h`` holds fractions of the image width ``W`` and height ``H``
(continuous coordinates, 0 = left/top edge, 1 = right/bottom edge). In the project's pixel convention
(:mod:`ssdcli.boxes`, pixel ``i`` covers ``[i-1, i]``)::

    xmin = (cx - w/2) * W + 1,   ymin = (cy - h/2) * H + 1,   xmax = (cx + w/2) * W,   ymax = (cy + h/2) * H

with ``W x H`` the real image size from the file header (EXIF orientation applied, as YOLO trainers do). Boxes are
validated and clipped as VOC boxes are (:mod:`ssdcli.data.box_checks`). A line of ``class x1 y1 x2 y2 ...`` (a
segment polygon) gives its bounding box. YOLO has no difficult/crowd flag: every object is a regular one.

Paths are resolved as the ultralytics tools resolve them: the root is ``path:`` (absolute, or relative to the
YAML's folder, else to the current folder) or the YAML's folder; ``train:`` / ``val:`` (or ``validation:``) /
``test:`` are folders (searched recursively for images), ``.txt`` lists of image paths (``./x`` and other relative
lines relative to the list's folder), single images, or lists of these, relative to the root (a ``../x`` that does
not exist is tried as ``x``, as dataset-site exports need). An image's label file is its path with the last
``/images/`` replaced by ``/labels/`` and the extension by ``.txt``. ``names`` is a list or a ``{id: name}`` dict
(ids need not be contiguous), or only ``nc`` (names ``class_0``...). A folder without YAML: ``images/`` (with
``train/``, ``val/``... subfolders as splits, or flat: split by ``--split``) beside ``labels/``, names from
``classes.txt`` / ``obj.names`` or ``--classes``. Record ids are image file names without the extension.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import yaml

from ssdcli.data.box_checks import check_pixel_boxes
from ssdcli.data.class_names import validate_class_names
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

__all__ = ["YOLO_PROBLEM_KINDS", "YoloDataset", "label_path", "prepare_yolo", "read_data_yaml"]

YOLO_PROBLEM_KINDS: dict[str, tuple[str, str]] = {
    **PROBLEM_KINDS,
    "missing_label_file": ("note", "image without a label file: kept as a negative example (as YOLO trainers do)"),
    "empty_label_file": ("note", "empty label file: kept as a negative example"),
    "unreadable_label_file": ("warning", "label file cannot be read as text: image skipped"),
    "bad_label_line": ("warning", "label line that is not 'class cx cy w h' (or a polygon): dropped"),
    "unknown_class_id": ("warning", "class id not in names: object dropped"),
    "polygon_label": ("note", "segment polygon line: its bounding box used"),
    "duplicate_label_line": ("note", "the same label line twice in one file: kept once (as YOLO trainers do)"),
    "coordinates_out_of_range": ("note", "normalised value outside [0, 1]: box clipped to the image"),
    "invalid_box": ("warning", "box with zero or negative width or height: dropped"),
    "duplicate_id": ("note", "image listed twice in the same split: kept once"),
    "all_boxes_invalid": ("warning", "no usable box in its label file: image skipped, not kept as a negative"),
}
YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
NAME_FILES = ("classes.txt", "obj.names", "classes.names")


class YoloDataset:
    """What a ``data.yaml`` (or folder) says: root, names by class id, and the images of each split."""

    def __init__(self, file: Path, root: Path, names: dict[int, str], splits: dict[str, list[str]],
                 sets: dict[str, list[str]], layout: str):  # fmt: skip
        self.file, self.root, self.names, self.splits, self.sets, self.layout = file, root, names, splits, sets, layout


def label_path(image_path: str) -> str:
    """The YOLO label file of an image: last ``/images/`` -> ``/labels/``, extension -> ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return os.path.splitext(sb.join(image_path.rsplit(sa, 1)))[0] + ".txt"


def read_data_yaml(source: Path, classes: list[str] | str | None = None) -> YoloDataset:
    """Resolve a ``data.yaml`` or a YOLO folder. Raises SsdError naming the file for anything unusable."""
    if source.is_dir():
        found = [source / n for n in YAML_NAMES if (source / n).is_file()]
        if found:
            source = found[0]
        else:
            return _read_folder(source, classes)
    try:
        check_regular_file(str(source))
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except SsdError:
        raise
    except OSError as e:
        raise SsdError(f"{source}: cannot read ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeError, ValueError) as e:
        raise SsdError(f"{source}: not valid YAML ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise SsdError(f"{source}: not a YOLO data.yaml (expected keys path, train, val, names)")
    names = _names(data, source)
    root = _root(data.get("path"), source.parent)
    if "val" not in data and "validation" in data:
        data["val"] = data["validation"]
    splits, sets = {}, {}
    for split in ("train", "val", "test"):
        value = data.get(split)
        if not value:
            continue
        entries = value if isinstance(value, list) else [value]
        images: list[str] = []
        for entry in entries:
            if not isinstance(entry, str):
                raise SsdError(f"{source}: '{split}' must be a path or a list of paths, got {entry!r:.60}")
            images += _images_of(_resolve(root, entry, f"{source}: '{split}'"))
        splits[split], sets[split] = images, [str(e) for e in entries]
    if not splits:
        raise SsdError(f"{source}: no 'train', 'val' or 'test' path")
    return YoloDataset(source, root, names, splits, sets, "data.yaml")


def _names(data: dict, source: Path) -> dict[int, str]:
    names = data.get("names")
    if names is None:
        nc = data.get("nc")
        if isinstance(nc, int) and not isinstance(nc, bool) and nc > 0:
            return {i: f"class_{i}" for i in range(nc)}
        raise SsdError(f"{source}: no 'names' (class names, a list or an {{id: name}} mapping)")
    if isinstance(names, list):
        out = dict(enumerate(names))
    elif isinstance(names, dict):
        try:
            out = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise SsdError(f"{source}: 'names' keys must be class ids (integers)") from None
    else:
        raise SsdError(f"{source}: 'names' must be a list or an {{id: name}} mapping, got {type(names).__name__}")
    if not out or not all(isinstance(v, (str, int, float)) and str(v).strip() for v in out.values()):
        raise SsdError(f"{source}: 'names' must hold non-empty class names")
    validate_class_names([str(v) for v in out.values()], f"{source}: names")
    nc = data.get("nc")
    if isinstance(nc, int) and nc != len(out):
        raise SsdError(f"{source}: 'nc: {nc}' but {len(out)} names")
    return {k: str(v).strip() for k, v in sorted(out.items())}


def _root(path: object, yaml_dir: Path) -> Path:
    if path is None or path == "":
        return yaml_dir
    p = Path(str(path)).expanduser()
    if p.is_absolute():
        return p
    return (yaml_dir / p) if (yaml_dir / p).exists() or not p.exists() else p.resolve()


def _resolve(root: Path, entry: str, where: str) -> Path:
    p = Path(entry).expanduser()
    x = p if p.is_absolute() else root / p
    if not x.exists() and entry.startswith("../"):
        x = root / entry[3:]
    if not x.exists():
        raise SsdError(f"{where}: {entry} not found (looked for {x})")
    return x


def _images_of(p: Path) -> list[str]:
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXT_ORDER and f.is_file())
    if p.suffix.lower() == ".txt":
        out = []
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line:
                q = Path(line.removeprefix("./"))
                out.append(str(q if q.is_absolute() else p.parent / q))
        return out
    return [str(p)]


def _read_folder(folder: Path, classes: list[str] | str | None) -> YoloDataset:
    images = folder / "images"
    if not images.is_dir():
        raise SsdError(f"{folder}: no data.yaml and no images/ folder: not a YOLO dataset")
    names_file = next((folder / n for n in NAME_FILES if (folder / n).is_file()), None)
    if names_file is not None:
        lines = [ln.strip() for ln in names_file.read_text(encoding="utf-8", errors="replace").splitlines()]
        names = dict(enumerate(validate_class_names([ln for ln in lines if ln], str(names_file))))
    elif isinstance(classes, list) or (isinstance(classes, str) and classes.strip().lower() != "auto"):
        listed = classes.split(",") if isinstance(classes, str) else classes
        names = dict(enumerate(validate_class_names(listed, "--classes")))
    else:
        raise SsdError(f"{folder}: no data.yaml and no {' / '.join(NAME_FILES)}: give the class names with --classes")
    subs = sorted(d for d in images.iterdir() if d.is_dir())
    splits, sets = {}, {}
    for d in subs:
        split = _split_name(d.name)
        splits.setdefault(split, []).extend(_images_of(d))
        sets.setdefault(split, []).append(f"images/{d.name}")
    flat = sorted(str(f) for f in images.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXT_ORDER)
    if flat:
        splits.setdefault(UNASSIGNED, []).extend(flat)
        sets.setdefault(UNASSIGNED, []).append("images/")
    if not any(splits.values()):
        raise SsdError(f"{images}: no image files")
    return YoloDataset(names_file or folder, folder, names, splits, sets, "images+labels folder")


def _split_name(name: str) -> str:
    n = name.lower()
    return "train" if "train" in n else "val" if "val" in n else "test" if "test" in n else UNASSIGNED


def prepare_yolo(
    source: str | os.PathLike,
    out: str | os.PathLike | None,
    *,
    classes: list[str] | str | None = None,
    verify_images: bool = False,
    strict: bool = False,
    workers: int | None = None,
    reporter: Reporter | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    split: str | tuple[float, float, float] | None = None,
) -> PrepareReport:
    """Validate a YOLO dataset and write the prepared folder of :func:`ssdcli.data.prepare.prepare_voc`.

    ``source``: a ``data.yaml`` or a folder (see the module docstring). ``classes``: None = the ``names`` in id
    order; a list or ``"a,b,c"`` (a subset or another order; for a folder without names, the names by id);
    ``"auto"``: sorted names found. Other options, errors and the report: as ``prepare_voc``.
    """
    check_split_options(val_fraction, split)
    start = time.perf_counter()
    path = Path(source).expanduser()
    if not path.exists():
        raise SsdError(f"{path}: dataset not found")
    ds = read_data_yaml(path.resolve(), classes)
    if ds.layout != "data.yaml" and not any(ds.file.name == n for n in NAME_FILES) and classes is not None:
        classes = None  # --classes gave the names by id
    base = ds.file.parent if ds.file.is_file() else ds.file
    tally = Tally(base, YOLO_PROBLEM_KINDS)
    keys: list[str] = []
    split_items: dict[str, list[str]] = {}
    for name, images in ds.splits.items():
        seen: set[str] = set()
        items = split_items.setdefault(name, [])
        for p in images:
            if p in seen:
                tally.add("duplicate_id", p, f"listed twice in {name}")
                continue
            seen.add(p)
            items.append(p)
            keys.append(p)
    unique = list(dict.fromkeys(keys))
    results = map_chunks(_read_chunk, unique, verify_images, workers, as_reporter(reporter), "read labels")
    parsed = _to_annotations(unique, results, ds, base, tally)
    dirs = {os.path.dirname(p) for p in unique}
    image_root = Path(os.path.commonpath(sorted(dirs))) if dirs else base
    scan = SourceScan(base, image_root, ds.layout, ds.sets, parsed, split_items, tally,
                      [ds.names[k] for k in sorted(ds.names)], "names",
                      {"format": "yolo", "file": str(ds.file), "path": str(ds.root)})  # fmt: skip
    options = {"verify_images": verify_images, "strict": strict}
    return finish_prepare(scan, out, classes=classes, strict=strict, val_fraction=val_fraction,
                          split_seed=split_seed, split=split, options=options, start=start)  # fmt: skip


def _read_chunk(paths: list[str], verify: bool) -> list[tuple]:
    """Worker side, per image: (header tuple, label status, rows, bad lines, duplicate lines, polygons)."""
    out = []
    for p in paths:
        try:
            info = read_image_info(p, verify)
            header = (info.width, info.height, info.orientation, None, "")
        except ImageProblem as e:
            header = (0, 0, 1, e.kind, str(e))
        out.append((header, *_read_labels(label_path(p))))
    return out


def _read_labels(path: str) -> tuple[str, list, list, int, int]:
    """-> (status, rows ``(class token, x0, y0, x1, y1, line)`` normalised xyxy, bad lines, duplicates, polygons)."""
    try:
        check_regular_file(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (FileNotFoundError, SsdError):
        return ("missing" if not os.path.exists(path) else "unreadable", [], [], 0, 0)
    except (OSError, UnicodeError) as e:
        return ("unreadable", [], [(0, getattr(e, "strerror", None) or type(e).__name__)], 0, 0)
    rows, bad, seen, dups, polygons = [], [], set(), 0, 0
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if tuple(parts) in seen:
            dups += 1
            continue
        seen.add(tuple(parts))
        try:
            values = [float(v) for v in parts[1:]]
        except ValueError:
            bad.append((number, line.strip()[:60]))
            continue
        if len(values) == 4:
            cx, cy, w, h = values
            rows.append((parts[0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, number))
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            rows.append((parts[0], min(xs), min(ys), max(xs), max(ys), number))
            polygons += 1
        else:
            bad.append((number, line.strip()[:60]))
    return ("ok" if rows or bad else "empty", rows, bad, dups, polygons)


def _class_id(token: str) -> int | None:
    try:
        v = float(token)
    except ValueError:
        return None
    return int(v) if v == int(v) else None


def _to_annotations(paths: list[str], results: list[tuple], ds: YoloDataset, base: Path,
                    tally: Tally) -> dict[str, VocAnnotation]:  # fmt: skip
    parsed: dict[str, VocAnnotation] = {}
    taken: set[str] = set()
    rows_img, rows = [], []
    for p, (header, status, img_rows, bad, dups, polygons) in zip(paths, results):
        labels = label_path(p)
        ann = VocAnnotation(id=_record_id(p, ds.root, taken), annotation=labels, image=p)
        parsed[p] = ann
        w, h, orientation, kind, detail = header
        if kind is not None:
            ann.fail(kind if os.path.exists(p) else "missing_image", p, detail if os.path.exists(p) else "not found")
            continue
        ann.width, ann.height = w, h
        if orientation != 1:
            ann.problem("exif_orientation", p, f"EXIF orientation {orientation}: boxes taken as drawn on the "
                                               "rotated image (as YOLO trainers do)")  # fmt: skip
        if status == "unreadable":
            ann.fail("unreadable_label_file", labels, bad[0][1] if bad else "not a regular text file")
            continue
        if status == "missing":
            ann.problem("missing_label_file", p, f"no {os.path.relpath(labels, base)}")
        elif status == "empty":
            ann.problem("empty_label_file", labels, "no objects")
        for number, text in bad:
            ann.problem("bad_label_line", labels, f"line {number}: {text}")
        if dups:
            ann.problem("duplicate_label_line", labels, f"{dups} repeated line(s)")
        if polygons:
            ann.problem("polygon_label", labels, f"{polygons} polygon line(s)")
        rows_img += [p] * len(img_rows)
        rows += img_rows
    if rows:
        _add_objects(parsed, rows_img, rows, ds.names)
    for ann in parsed.values():
        for problem in ann.problems:
            tally.add(*problem)
    return parsed


def _add_objects(parsed: dict[str, VocAnnotation], rows_img: list[str], rows: list[tuple],
                 names: dict[int, str]) -> None:  # fmt: skip
    """All label rows at once: class ids, normalised -> pixel boxes, clipping; objects appended per image."""
    anns = [parsed[p] for p in rows_img]
    xyxy = np.asarray([r[1:5] for r in rows], np.float64).reshape(-1, 4)
    size = np.asarray([(a.width, a.height) for a in anns], np.float64).reshape(-1, 2)
    pixel = xyxy * np.concatenate([size, size], axis=1) + np.array([1.0, 1.0, 0.0, 0.0])
    check = check_pixel_boxes(pixel, size[:, 0], size[:, 1])
    class_names = [names.get(c) if c is not None else None for c in (_class_id(r[0]) for r in rows)]
    out_of_range = ((xyxy < 0) | (xyxy > 1)).any(axis=1)
    dropped: dict[str, int] = {}
    for j, (a, r, name) in enumerate(zip(anns, rows, class_names)):  # problem details and objects, per row
        where = f"line {r[5]}: {r[0]} {' '.join(f'{v:.6g}' for v in r[1:5])} (xyxy) in {a.width}x{a.height}"
        if name is None:
            a.problem("unknown_class_id", a.annotation, f"line {r[5]}: class {r[0]} not in names")
            continue
        if check.invalid[j]:
            a.problem("invalid_box", a.annotation, where)
        elif check.outside[j]:
            a.problem("box_outside_image", a.annotation, where)
        else:
            if out_of_range[j]:
                a.problem("coordinates_out_of_range", a.annotation, where)
            if check.clipped[j]:
                a.problem("box_clipped", a.annotation, where)
            elif check.edge[j]:
                a.problem("box_edge", a.annotation, where)
            a.objects.append(VocObject(name, tuple(check.boxes[j].tolist()), False))
            continue
        dropped[rows_img[j]] = dropped.get(rows_img[j], 0) + 1
    for p, n in dropped.items():
        a = parsed[p]
        if not a.objects:
            a.fail("all_boxes_invalid", a.annotation, f"{n} box(es), none usable")


def _record_id(path: str, root: Path, taken: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    rid = stem
    if rid in taken:
        try:
            rid = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")
        except ValueError:
            rid = stem
    n = 2
    while rid in taken:
        rid, n = f"{stem}~{n}", n + 1
    taken.add(rid)
    return rid
