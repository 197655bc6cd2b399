"""Where a VOC-format dataset keeps its splits: ``VOCdevkit`` vs one folder, split files, ``--train-sets``.

ROOT is either a ``VOCdevkit`` folder (``VOC2007/``, ``VOC2012/``... inside; a folder holding ``VOCdevkit/`` works
too) or one VOC-style folder (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/*.txt``).

Splits (:func:`resolve_layout`):

* VOCdevkit: ``train`` = ``2007/trainval`` + ``2012/trainval`` (those that exist; every year's trainval when
  neither does), ``test`` = ``2007/test`` when it exists. ``train_sets`` / ``test_sets`` override with
  ``"2007/trainval,2012/trainval"`` (``VOC2007/trainval`` works too; ``"none"`` for no such split).
* Single folder, from ``ImageSets/Main``: ``train`` = ``trainval.txt``, else ``train.txt``; ``test`` =
  ``test.txt``, else ``val.txt`` (when ``train.txt`` was the train split); ``val`` = ``val.txt`` when
  ``train.txt``, ``val.txt`` and ``test.txt`` all exist and there is no ``trainval.txt``. When none of
  these exist, every other ``<name>.txt`` (e.g. CVAT's ``default.txt``) forms ``train``. Override with
  ``train_sets="train,val"`` etc. A folder without any split file gives :data:`ALL_ANNOTATIONS`: every
  ``Annotations/*.xml``, split by ``prepare-voc --split`` (seeded, stratified) instead of being refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ssdcli.data.images import check_regular_file
from ssdcli.errors import SsdError

__all__ = [
    "ALL_ANNOTATIONS",
    "IMAGE_EXT_ORDER",
    "Key",
    "ParseTask",
    "VocSet",
    "collect_items",
    "list_folder",
    "read_ids",
    "resolve_layout",
]

# image extensions looked for in JPEGImages/, preferred first when one id has several files
IMAGE_EXT_ORDER = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")

Key = tuple[str, str]  # (VOC folder, image id)
ALL_ANNOTATIONS = "*"  # split name (and set name) of "every annotation in the folder": no split file exists
ParseTask = tuple[str, str, str | None, str]  # (image id, XML path, image path or None, image folder)


@dataclass(frozen=True)
class VocSet:
    """One split file of one VOC folder."""

    folder: Path  # a VOC folder holding Annotations/, JPEGImages/, ImageSets/Main/
    name: str  # split file stem in ImageSets/Main
    label: str  # how it is shown: "2007/trainval" or "trainval"

    @property
    def file(self) -> Path:
        return self.folder / "ImageSets" / "Main" / f"{self.name}.txt"


def resolve_layout(root: Path, train_sets, test_sets) -> tuple[Path, str, dict[str, list[VocSet]]]:
    """-> (image root, "devkit" or "folder", split name -> sets). Raises SsdError for folders that are not VOC.

    ``train_sets`` / ``test_sets``: None (defaults, see the module docstring), ``"a,b"``, a list, or ``"none"``.
    """
    if not (root / "Annotations").is_dir() and (root / "VOCdevkit").is_dir():
        root = root / "VOCdevkit"
    if (root / "Annotations").is_dir():
        layout, years, defaults = "folder", None, _folder_defaults(root)
    else:
        layout = "devkit"
        years = {p.name[3:]: p for p in sorted(root.iterdir())
                 if re.fullmatch(r"VOC\d{4}", p.name) and (p / "Annotations").is_dir()}  # fmt: skip
        if not years:
            raise SsdError(f"{root}: no Annotations/ folder (and no VOC20xx/ folders): not a VOC dataset")
        has = lambda y, n: (years[y] / "ImageSets" / "Main" / f"{n}.txt").is_file()
        tv = [y for y in ("2007", "2012") if y in years and has(y, "trainval")]
        tv = tv or [y for y in years if has(y, "trainval")]
        defaults = {"train": [VocSet(years[y], "trainval", f"{y}/trainval") for y in tv]}
        if "2007" in years and has("2007", "test"):
            defaults["test"] = [VocSet(years["2007"], "test", "2007/test")]
    result = dict(defaults)
    if train_sets is not None or test_sets is not None:
        result.pop(ALL_ANNOTATIONS, None)
    for split, spec, option in (("train", train_sets, "--train-sets"), ("test", test_sets, "--test-sets")):
        if spec is not None:
            result[split] = _parse_sets(spec, option, root, years)
    result = {k: v for k, v in result.items() if v}
    if not result:
        raise SsdError(f"{root}: no split files (ImageSets/Main/trainval.txt, test.txt...) to read image ids from")
    for s in {s.folder for v in result.values() for s in v}:
        if not (s / "JPEGImages").is_dir():
            raise SsdError(f"{s}: no JPEGImages/ folder")
    return root, layout, result


def _folder_defaults(folder: Path) -> dict[str, list[VocSet]]:
    main = folder / "ImageSets" / "Main"
    have = {p.stem for p in main.glob("*.txt")} if main.is_dir() else set()
    mk = lambda n: [VocSet(folder, n, n)]
    if "trainval" in have:
        return {"train": mk("trainval"), **({"test": mk("test")} if "test" in have else {})}
    if "train" in have:
        out = {"train": mk("train")}
        if "test" in have:
            out["test"] = mk("test")
            if "val" in have:
                out["val"] = mk("val")
        elif "val" in have:
            out["test"] = mk("val")
        return out
    if "test" in have:
        return {"test": mk("test")}
    other = sorted(n for n in have if "_" not in n)
    if other:
        return {"train": [VocSet(folder, n, n) for n in other]}
    return {ALL_ANNOTATIONS: [VocSet(folder, ALL_ANNOTATIONS, "all annotations")]}


def _parse_sets(spec, option: str, root: Path, years: dict[str, Path] | None) -> list[VocSet] | None:
    if spec is None:
        return None
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    parts = [p.strip() for p in parts if p.strip()]
    if parts == ["none"] or not parts:
        return []
    out = []
    for p in parts:
        if years is None:
            s = VocSet(root, p, p)
        else:
            m = re.fullmatch(r"(?:VOC)?(\d{4})/(\w+)", p)
            if not m:
                raise SsdError(f"{option}: '{p}' should look like 2007/trainval")
            if m.group(1) not in years:
                raise SsdError(f"{option}: '{p}': no VOC{m.group(1)}/ folder with Annotations in {root}")
            s = VocSet(years[m.group(1)], m.group(2), f"{m.group(1)}/{m.group(2)}")
        if not s.file.is_file():
            raise SsdError(f"{option}: '{p}': {s.file} not found")
        out.append(s)
    return out


def collect_items(
    split_sets: dict[str, list[VocSet]], on_duplicate: Callable[[str, str], None]
) -> tuple[dict[str, list[Key]], dict[Key, ParseTask], dict[Key, str]]:
    """Image ids listed by each split's sets -> (split -> ordered keys, key -> parse task, key -> missing XML path).

    An id listed twice within one split is kept once and reported as ``on_duplicate(split file, image id)``.
    Raises SsdError when the split files list no id at all.
    """
    split_items: dict[str, list[Key]] = {}
    tasks: dict[Key, ParseTask] = {}
    missing: dict[Key, str] = {}
    listings: dict[Path, tuple[set[str], dict[str, str]]] = {}
    for split, sets in split_sets.items():
        items = split_items.setdefault(split, [])
        seen: set[Key] = set()
        for s in sets:
            if s.folder not in listings:
                listings[s.folder] = list_folder(s.folder)
            xml_names, images = listings[s.folder]
            folder, ann_dir, image_dir = str(s.folder), str(s.folder / "Annotations"), str(s.folder / "JPEGImages")
            ids = sorted(n[:-4] for n in xml_names) if s.name == ALL_ANNOTATIONS else read_ids(s.file)
            for image_id in ids:
                key = (folder, image_id)
                if key in seen:
                    on_duplicate(str(s.file), image_id)
                    continue
                seen.add(key)
                items.append(key)
                xml = os.path.join(ann_dir, image_id + ".xml")
                if image_id + ".xml" in xml_names:
                    tasks[key] = (image_id, xml, images.get(image_id), image_dir)
                elif key not in missing:
                    missing[key] = xml
    if not tasks and not missing:
        raise SsdError(f"{', '.join(str(s.file) for v in split_sets.values() for s in v)}: no image ids listed")
    return split_items, tasks, missing


def list_folder(folder: Path) -> tuple[set[str], dict[str, str]]:
    """-> (annotation file names, image stem -> image path) with one directory scan each."""
    with os.scandir(folder / "Annotations") as it:
        xml_names = {e.name for e in it if e.name.endswith(".xml")}
    rank = {ext: i for i, ext in enumerate(IMAGE_EXT_ORDER)}
    images: dict[str, tuple[int, str]] = {}
    with os.scandir(folder / "JPEGImages") as it:
        for e in it:
            stem, ext = os.path.splitext(e.name)
            r = rank.get(ext.lower())
            if r is not None and (stem not in images or r < images[stem][0]):
                images[stem] = (r, e.path)
    return xml_names, {k: v[1] for k, v in images.items()}


def read_ids(path: Path) -> list[str]:
    """Image ids of a split file: the first token of each line, an image or ``.xml`` extension dropped."""
    check_regular_file(path)  # a FIFO named trainval.txt would block forever
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise SsdError(f"{path}: cannot read ({e.strerror or e})") from None
    ids = []
    for line in lines:
        token = line.split()[0] if line.split() else ""
        stem, ext = os.path.splitext(token)
        ids.append(stem if ext.lower() in IMAGE_EXT_ORDER + (".xml",) else token)
    return [i for i in ids if i]
