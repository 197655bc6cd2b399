"""``prepare-voc`` as a library call, and the one writer every ``prepare-*`` shares (:func:`finish_prepare`).

A source reader (VOC here; :mod:`ssdcli.data.coco_source`, :mod:`ssdcli.data.yolo_source`) turns its files into
:class:`SourceScan` (one :class:`~ssdcli.data.voc.VocAnnotation` per image, problems counted in a :class:`Tally`);
:func:`finish_prepare` resolves the classes, makes the records, the splits (:mod:`ssdcli.data.splits`), the report,
applies ``strict`` and writes the validated prepared folder (:mod:`ssdcli.data.records`).

VOC dataset layouts (``VOCdevkit`` or one VOC folder) and the splits written (``<split>.jsonl``): see
:mod:`ssdcli.data.voc_layout`. Boxes are VOC pixel numbers clipped to ``[1, W] x [1, H]`` (see
:mod:`ssdcli.boxes`); labels are 1-based.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ssdcli.data.class_names import validate_class_names
from ssdcli.data.label_stats import write_label_stats
from ssdcli.data.records import FORMAT_NAME, MANIFEST_NAME, ImageRecord, write_split
from ssdcli.data.splits import holdout, stratified_split
from ssdcli.data.voc import PROBLEM_KINDS, VOC_CLASSES, VocAnnotation, VocObject, parse_voc_item
from ssdcli.data.voc_layout import ALL_ANNOTATIONS, Key, collect_items, resolve_layout
from ssdcli.errors import SsdError
from ssdcli.io_utils import atomic_write_text
from ssdcli.reporting import Reporter, as_reporter
from ssdcli.version import __version__

_EXAMPLES = 5
_SERIAL_BELOW = 1500  # fewer items than this are parsed in-process (pool start-up would cost more)
_CHUNK = 400
# problem kinds that drop one object (counted under skipped.objects in the manifest), of every source format
OBJECT_DROPPING_KINDS = ("bad_object", "invalid_box", "box_outside_image", "unknown_class", "unknown_category",
                         "annotation_without_image", "unknown_class_id", "bad_label_line")  # fmt: skip


@dataclass
class ProblemStat:
    kind: str
    severity: str  # "warning" (data changed or dropped) or "note" (handled without loss)
    description: str
    count: int = 0
    examples: list[str] = field(default_factory=list)  # "file: detail", file relative to ROOT


@dataclass
class SplitStats:
    sets: list[str]  # e.g. ["2007/trainval", "2012/trainval"]
    images: int = 0
    objects: int = 0
    difficult: int = 0
    empty_images: int = 0  # images kept without any object
    class_objects: list[int] = field(default_factory=list)  # per class (index = label - 1)
    class_difficult: list[int] = field(default_factory=list)


@dataclass
class PrepareReport:
    root: Path
    out: Path | None
    classes: list[str]
    classes_auto: bool
    splits: dict[str, SplitStats]
    problems: dict[str, ProblemStat]  # by kind, most frequent first
    skipped: list[dict]  # images left out: {"split", "id", "reason", "detail", "file"}
    unknown_classes: dict[str, int]  # class name -> objects skipped
    elapsed_s: float = 0.0
    written: bool = False

    @property
    def warnings(self) -> int:
        """Number of problems that changed or dropped data (what ``strict`` fails on)."""
        return sum(p.count for p in self.problems.values() if p.severity == "warning")

    def to_manifest_parts(self) -> dict:
        counts = {
            name: {
                "images": s.images, "objects": s.objects, "difficult": s.difficult, "empty_images": s.empty_images,
                "per_class": {c: {"objects": o, "difficult": d}
                              for c, o, d in zip(self.classes, s.class_objects, s.class_difficult)},
            }
            for name, s in self.splits.items()
        }  # fmt: skip
        problems = {k: {"severity": p.severity, "count": p.count, "description": p.description,
                        "examples": p.examples} for k, p in self.problems.items()}  # fmt: skip
        objects = {k: p.count for k, p in self.problems.items()
                   if k in OBJECT_DROPPING_KINDS}  # fmt: skip
        images = [{**d, "file": _rel(d["file"], self.root)} for d in self.skipped]
        skipped = {"images": images, "objects": objects, "unknown_classes": self.unknown_classes}
        return {"counts": counts, "problems": problems, "skipped": skipped}


class PrepareFailure(SsdError):
    """``prepare_voc`` found nothing usable or (with ``strict``) problems; nothing was written. Has ``.report``."""

    def __init__(self, message: str, report: PrepareReport):
        super().__init__(message)
        self.report = report


class StrictFailure(PrepareFailure):
    """Raised by ``prepare_voc(strict=True)`` when problems of severity "warning" were found."""


class _Tally:
    """Problems counted by kind, with the first few examples of each."""

    def __init__(self, root: Path, kinds: dict[str, tuple[str, str]] | None = None):
        self.root, self.stats = root, {}
        self.kinds = PROBLEM_KINDS if kinds is None else kinds

    def add(self, kind: str, file: str, detail: str) -> None:
        self.add_many(kind, file, 1, (detail,))

    def add_many(self, kind: str, file: str, count: int, details) -> None:
        """``count`` problems of one kind at once (vectorised readers); ``details``: the first few, lazily."""
        if count <= 0:
            return
        if kind not in self.stats:
            self.stats[kind] = ProblemStat(kind, *self.kinds[kind])
        p = self.stats[kind]
        p.count += count
        for detail in details:
            if len(p.examples) >= _EXAMPLES:
                break
            p.examples.append(f"{_rel(file, self.root)}: {detail}")

    def sorted(self) -> dict[str, ProblemStat]:
        return dict(sorted(self.stats.items(), key=lambda kv: (kv[1].severity != "warning", -kv[1].count)))


Tally = _Tally  # the public name source readers use

UNASSIGNED = "*"  # split_items key of images the source puts in no split (split by ``split`` fractions)
DEFAULT_SPLIT = (0.8, 0.1, 0.1)  # train, val, test fractions for a source without any split
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class SourceScan:
    """What a source reader (VOC, COCO, YOLO) hands to the one writer, :func:`finish_prepare`.

    ``parsed``: every image read, keyed by a source-specific key, with its objects in the pixel convention and its
    problems (already counted in ``tally``). ``split_items``: split name -> keys, ``UNASSIGNED`` for images without
    a split. ``default_classes``: the class list when ``classes`` is not given (``default_label`` says what it
    is, recorded in the manifest), None for the sorted names found.
    """

    root: Path
    image_root: Path
    layout: str
    sets: dict[str, list[str]]  # split -> what it was read from (shown and recorded)
    parsed: dict
    split_items: dict[str, list]
    tally: _Tally
    default_classes: list[str] | None
    default_label: str
    source: dict = field(default_factory=dict)  # extra source facts for the manifest


def prepare_voc(
    root: str | os.PathLike,
    out: str | os.PathLike | None,
    *,
    classes: list[str] | str | None = None,
    train_sets: list[str] | str | None = None,
    test_sets: list[str] | str | None = None,
    verify_images: bool = False,
    strict: bool = False,
    workers: int | None = None,
    reporter: Reporter | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    split: str | tuple[float, float, float] | None = None,
) -> PrepareReport:
    """Validate a VOC-format dataset and write ``out/manifest.json`` + ``out/<split>.jsonl``.

    ``classes``: None = the 20 VOC classes, a list (or ``"a,b,c"``), or ``"auto"`` (sorted names found).
    ``train_sets`` / ``test_sets``: see :mod:`ssdcli.data.voc_layout`. ``val_fraction``: when the source has no
    ``val`` split, this fraction of the train images (chosen by :func:`ssdcli.data.splits.holdout` from their ids
    and ``split_seed``) becomes ``val``, the split ``ssd train`` selects ``best.pth`` on; 0 keeps them all in train.
    ``split``: ``"0.8,0.1,0.1"`` train/val/test fractions for images the source puts in no split (a folder
    without ``ImageSets/Main``: default :data:`DEFAULT_SPLIT`); given explicitly, the train split is re-split too
    into the splits the source lacks (see :func:`finish_prepare`). ``workers``: parsing processes (default: CPU
    count; small datasets are parsed in-process). ``reporter``: a :class:`ssdcli.reporting.Reporter` (task
    ``"read annotations"``, one unit per image); None is silent. ``out=None`` only validates. Raises :class:`SsdError` for unusable
    input, :class:`PrepareFailure` when no image is usable and :class:`StrictFailure` when ``strict`` and
    problems of severity ``"warning"`` were found (nothing is written then; both carry the report).
    """
    check_split_options(val_fraction, split)
    start = time.perf_counter()
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SsdError(f"{root}: {'not a folder' if root.exists() else 'dataset folder not found'}")
    root = root.resolve()
    image_root, layout, split_sets = resolve_layout(root, train_sets, test_sets)
    tally = _Tally(root)
    split_items, tasks, missing = collect_items(split_sets, lambda f, image_id: tally.add("duplicate_id", f, image_id))
    no_xml = {k: VocAnnotation(k[1], xml).fail("missing_annotation", xml, "no such file") for k, xml in missing.items()}
    parsed = {**_parse_all(tasks, verify_images, workers, as_reporter(reporter)), **no_xml}
    for ann in parsed.values():
        for problem in ann.problems:
            tally.add(*problem)
    split_items = {(UNASSIGNED if k == ALL_ANNOTATIONS else k): v for k, v in split_items.items()}
    sets = {(UNASSIGNED if k == ALL_ANNOTATIONS else k): [s.label for s in v] for k, v in split_sets.items()}
    scan = SourceScan(root, image_root, layout, sets, parsed, split_items, tally, list(VOC_CLASSES), "voc")
    options = {"train_sets": train_sets, "test_sets": test_sets, "verify_images": verify_images, "strict": strict}
    return finish_prepare(scan, out, classes=classes, strict=strict, val_fraction=val_fraction,
                          split_seed=split_seed, split=split, options=options, start=start)  # fmt: skip


def check_split_options(val_fraction: float, split: str | tuple[float, float, float] | None) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise SsdError(f"--val-fraction {val_fraction}: expected a fraction in [0, 1) (0: no validation hold-out)")
    if split is not None:
        parse_split(split)


def parse_split(split: str | tuple[float, float, float] | list[float]) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (train, val, test; two numbers: no test) -> fractions. Raises SsdError naming ``--split``."""
    parts = split.split(",") if isinstance(split, str) else list(split)
    try:
        values = [float(v) for v in parts]
    except (TypeError, ValueError):
        raise SsdError(f"--split {split}: expected fractions like 0.8,0.1,0.1 (train, val, test)") from None
    if len(values) == 2:
        values.append(0.0)
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values) or abs(sum(values) - 1.0) > 1e-6 \
            or values[0] <= 0:
        raise SsdError(f"--split {split}: expected 2 or 3 fractions in [0, 1] summing to 1, train > 0 "
                       "(e.g. 0.8,0.1,0.1)")  # fmt: skip
    return values[0], values[1], values[2]


def finish_prepare(
    scan: SourceScan,
    out: str | os.PathLike | None,
    *,
    classes: list[str] | str | None,
    strict: bool,
    val_fraction: float,
    split_seed: int,
    split: str | tuple[float, float, float] | None,
    options: dict,
    start: float,
) -> PrepareReport:
    """The part every ``prepare-*`` shares: classes, records, splits, the report, strict mode, writing.

    Splits: images in ``UNASSIGNED`` are split into train/val/test by ``split`` (default :data:`DEFAULT_SPLIT`),
    seeded and stratified by each image's rarest class (:func:`ssdcli.data.splits.stratified_split`); when
    ``split`` is given and the source has a train split, that train split joins the pool too. A split the source
    already has receives nothing from the pool (its fraction stays in train); the splits made list their images
    by id, so the same images in any format give the same splits in the same order. Then, when there is a train split
    but no val (and ``split`` was not given), ``val_fraction`` of train is held out as val
    (:func:`ssdcli.data.splits.holdout`). Both are recorded under ``options`` in the manifest.
    """
    tally = scan.tally
    class_list = _normalise_classes(classes, scan.default_classes)
    parsed = scan.parsed
    found = sorted({o.name for a in parsed.values() for o in a.objects})
    auto = class_list is None
    if class_list is None:
        if not found:
            raise SsdError(f"{scan.root}: no objects found in the annotations, so --classes auto finds no class")
        class_list = found
    elif found and not set(found) & set(class_list):
        raise SsdError(f"{scan.root}: no object matches the class list (found: {', '.join(found[:8])}); "
                       "use --classes auto or --classes")  # fmt: skip
    out = Path(out) if out is not None else None
    report = PrepareReport(scan.root, out, class_list, auto, splits={}, problems={}, skipped=[], unknown_classes={})
    records = _make_records(parsed, class_list, tally, report.unknown_classes)
    split_records = {}
    for name, items in scan.split_items.items():
        split_records[name] = _split_records(name, items, parsed, records, report.skipped)
    _check_overlap(scan, tally)
    sets = {k: list(v) for k, v in scan.sets.items() if k != UNASSIGNED}
    auto_split = _auto_split(split_records, sets, scan.sets.get(UNASSIGNED, []), split, split_seed, len(class_list))
    explicit_split = auto_split is not None and split is not None  # --split said what val gets, even 0
    held_out = None if explicit_split else _hold_out_val(split_records, sets, val_fraction, split_seed)
    order = {n: i for i, n in enumerate(SPLIT_NAMES)}
    split_records = dict(sorted(split_records.items(), key=lambda kv: order.get(kv[0], len(order))))
    for name, recs in split_records.items():
        report.splits[name] = _split_stats(sets.get(name, [name]), recs, len(class_list))
    report.problems = tally.sorted()
    report.elapsed_s = time.perf_counter() - start
    if strict and report.warnings:
        raise StrictFailure(f"{scan.root}: {report.warnings} problem(s) found and --strict is set; nothing written",
                            report)  # fmt: skip
    if not any(split_records.values()):
        raise PrepareFailure(f"{scan.root}: no usable image in any split (see the problems)", report)
    if out is not None:
        label = "auto" if report.classes_auto else (scan.default_label if classes is None else "list")
        options = {"classes": label, **options, "val_holdout": held_out, "auto_split": auto_split}
        _write(out, report, split_records, scan.image_root, scan.layout, sets, options, scan.source)
        report.written = True
        report.elapsed_s = time.perf_counter() - start
    return report


def _check_overlap(scan: SourceScan, tally: _Tally) -> None:
    """An image (same source key) in two of train / val / test is reported once per pair."""
    keysets = {k: set(scan.split_items[k]) for k in SPLIT_NAMES if k in scan.split_items}
    for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
        if a in keysets and b in keysets:
            for key in sorted(keysets[a] & keysets[b], key=str):
                tally.add("split_overlap", scan.parsed[key].annotation, f"in {a} and {b}")


def _rarest_class(recs: list[ImageRecord], num_classes: int) -> list[int]:
    """Stratum of each image: its label with the fewest objects in ``recs`` (0 for an image without objects)."""
    labels = np.concatenate([r.labels for r in recs] + [np.zeros(0, np.int64)])
    counts = np.bincount(labels, minlength=num_classes + 1)
    return [int(r.labels[np.argmin(counts[r.labels] * (num_classes + 1) + r.labels)]) if r.labels.size else 0
            for r in recs]  # fmt: skip


def _auto_split(split_records: dict[str, list[ImageRecord]], sets: dict[str, list[str]], pool_sets: list[str],
                split, seed: int, num_classes: int) -> dict | None:  # fmt: skip
    pool = split_records.pop(UNASSIGNED, [])
    explicit = split is not None
    fractions = list(parse_split(split) if explicit else DEFAULT_SPLIT)
    sources = list(pool_sets)
    lacking = [k for k, name in ((1, "val"), (2, "test")) if name not in split_records and fractions[k] > 0]
    if explicit and split_records.get("train") and lacking:  # nothing to make: the source has what --split asks
        pool = split_records.pop("train") + pool
        sources = sets.pop("train", []) + sources
    if not pool:
        return None
    for k, name in ((1, "val"), (2, "test")):
        if name in split_records:
            fractions[0], fractions[k] = fractions[0] + fractions[k], 0.0
    which = stratified_split([r.id for r in pool], _rarest_class(pool, num_classes), fractions, seed)
    counts = {}
    for k, name in enumerate(SPLIT_NAMES):
        recs = sorted((r for r, w in zip(pool, which) if w == k), key=lambda r: r.id)  # order: by id, as membership
        if recs:
            split_records[name] = recs
            sets[name] = [f"{fractions[k]:g} of {'+'.join(sources) or 'all images'} (seed {seed}, stratified)"]
            counts[name] = len(recs)
    return {"from": sources, "fractions": fractions, "seed": seed, "stratified_by": "rarest class", "images": counts}


def _hold_out_val(split_records: dict[str, list[ImageRecord]], sets: dict[str, list[str]],
                  fraction: float, seed: int) -> dict | None:  # fmt: skip
    """Move a deterministic ``fraction`` of train into a new ``val`` split when the source has none."""
    train = split_records.get("train")
    if fraction == 0 or not train or "val" in split_records:
        return None
    kept, held = holdout(train, [r.id for r in train], fraction, seed)
    if not held:
        return None
    split_records["train"], split_records["val"] = kept, held
    sets["val"] = [f"{fraction:g} of {'+'.join(sets.get('train', ['train']))} (seed {seed})"]
    return {"from": "train", "fraction": fraction, "seed": seed, "images": len(held)}


def _make_records(parsed: dict[Key, VocAnnotation], classes: list[str], tally: _Tally,
                  unknown: dict[str, int]) -> dict[Key, ImageRecord]:  # fmt: skip
    """Usable annotations -> records: every object of every image as flat arrays, then one slice per image."""
    index = {c: i + 1 for i, c in enumerate(classes)}
    usable = [(k, a) for k, a in parsed.items() if a.skip is None]
    objs = [o for _, a in usable for o in a.objects]
    counts = np.fromiter((len(a.objects) for _, a in usable), np.int64, len(usable))
    labels = np.fromiter((index.get(o.name, 0) for o in objs), np.int64, len(objs))
    boxes = np.asarray([o.box for o in objs], dtype=np.float32).reshape(-1, 4)
    difficult = np.fromiter((o.difficult for o in objs), bool, len(objs))
    owner = np.repeat(np.arange(len(usable)), counts)
    for i in np.flatnonzero(labels == 0).tolist():  # objects of classes not in the list (usually none)
        name = objs[i].name
        tally.add("unknown_class", usable[owner[i]][1].annotation, name)
        unknown[name] = unknown.get(name, 0) + 1
    known = labels > 0
    kept = np.bincount(owner[known], minlength=len(usable))
    ends = np.cumsum(counts)
    records = {}
    for u, (key, ann) in enumerate(usable):
        s, e = int(ends[u] - counts[u]), int(ends[u])
        if kept[u] == 0:
            tally.add("no_objects", ann.annotation, "kept without boxes")
        m = slice(s, e) if kept[u] == e - s else np.flatnonzero(known[s:e]) + s
        records[key] = ImageRecord(id=ann.id, path=str(ann.image), width=ann.width, height=ann.height,
                                   boxes=boxes[m], labels=labels[m], difficult=difficult[m])  # fmt: skip
    return records


def _split_records(split: str, items: list[Key], parsed, records, skipped: list[dict]) -> list[ImageRecord]:
    recs, ids = [], set()
    for key in items:
        ann = parsed[key]
        if ann.skip is not None:
            kind, file, detail = ann.problems[-1]
            skipped.append({"split": split, "id": ann.id, "reason": kind, "file": file, "detail": detail})
            continue
        rec = records[key]
        if rec.id in ids:  # the same id in two VOC years: keep both, make the later one unique
            rec = dataclasses.replace(rec, id=f"{Path(key[0]).name}/{rec.id}")
        ids.add(rec.id)
        recs.append(rec)
    return recs


def _normalise_classes(classes: list[str] | str | None, default: list[str] | None) -> list[str] | None:
    if classes is None:
        return list(default) if default is not None else None
    if isinstance(classes, str):
        if classes.strip().lower() == "auto":
            return None
        classes = classes.split(",")
    return validate_class_names(classes, "--classes")


def _parse_chunk(chunk: list[tuple[str, str, str | None, str]], verify: bool) -> list[tuple]:
    """Worker side: parse a chunk, returned as plain tuples (pickled ~10x faster than dataclasses)."""
    out = []
    for image_id, xml, image, image_dir in chunk:
        a = parse_voc_item(image_id, xml, image, image_dir, verify)
        out.append((a.id, a.annotation, a.image, a.width, a.height, [tuple(o) for o in a.objects], a.problems, a.skip))
    return out


def _from_tuple(t: tuple) -> VocAnnotation:
    return VocAnnotation(t[0], t[1], t[2], t[3], t[4], [VocObject(*o) for o in t[5]], t[6], t[7])


def _parse_all(tasks: dict, verify: bool, workers: int | None, reporter: Reporter) -> dict[Key, VocAnnotation]:
    """Parse every task, in ``workers`` processes (fork where available) when there are many."""
    keys = list(tasks)
    results = map_chunks(_parse_chunk, [tasks[k] for k in keys], verify, workers, reporter, "read annotations")
    return {k: _from_tuple(t) for k, t in zip(keys, results)}


def map_chunks(fn, todo: list, verify: bool, workers: int | None, reporter: Reporter, task: str) -> list:
    """``fn(chunk, verify)`` over chunks of ``todo``, flattened in order; in ``workers`` processes (fork where
    available) when there are many items. ``fn`` must be a module-level function returning one result per item.
    Progress: ``task``, one unit per item."""
    reporter.start(task, len(todo), unit="img")
    workers = max(1, min(workers if workers is not None else (os.cpu_count() or 1), 32))
    chunks = [todo[i : i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
    results: list[list] = []
    if workers == 1 or len(todo) < _SERIAL_BELOW:
        for c in chunks:
            results.append(fn(c, verify))
            reporter.advance(task, len(c))
    else:
        fork = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if fork else None)  # fork: workers need not import torch again
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
            for c, result in zip(chunks, pool.map(fn, chunks, [verify] * len(chunks))):
                results.append(result)
                reporter.advance(task, len(c))
    reporter.end(task)
    return [t for r in results for t in r]


def _split_stats(sets: list[str], recs: list[ImageRecord], num_classes: int) -> SplitStats:
    labels = np.concatenate([r.labels for r in recs] + [np.zeros(0, np.int64)])
    diff = np.concatenate([r.difficult for r in recs] + [np.zeros(0, bool)])
    return SplitStats(
        sets=sets, images=len(recs), objects=int(labels.size), difficult=int(diff.sum()),
        empty_images=sum(1 for r in recs if r.labels.size == 0),
        class_objects=np.bincount(labels - 1, minlength=num_classes).tolist(),
        class_difficult=np.bincount(labels[diff] - 1, minlength=num_classes).tolist(),
    )  # fmt: skip


def _write(
    out: Path, report: PrepareReport, split_records, image_root: Path, layout: str, sets: dict[str, list[str]],
    options: dict, source_extra: dict,
) -> None:
    if out.exists() and not out.is_dir():
        raise SsdError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # a crash below leaves no manifest, never a mixed one
    except OSError as e:
        raise SsdError(f"{out}: cannot write ({e.strerror or e})") from None
    splits = {}
    for name, recs in split_records.items():
        write_split(out / f"{name}.jsonl", recs, str(image_root))
        splits[name] = {"file": f"{name}.jsonl", "images": len(recs), "objects": int(sum(r.labels.size for r in recs))}
    manifest = {
        "format": FORMAT_NAME, "version": 1, "classes": report.classes, "image_root": str(image_root),
        "splits": splits,
        "source": {"root": str(report.root), "layout": layout, "sets": sets, **source_extra},
        "options": options,
        **report.to_manifest_parts(),
        "created": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "by": f"ssdcli {__version__}"},
    }  # fmt: skip
    write_label_stats(out, split_records, report.classes, title=report.root.name)  # labels.png: look at the data
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")


def _rel(path: str, root: Path) -> str:
    try:
        return os.path.relpath(path, root) if path else "?"
    except ValueError:
        return path
