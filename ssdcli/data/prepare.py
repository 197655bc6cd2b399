"""``prepare-voc`` as a library call: VOC-format data -> validated prepared folder (:mod:`ssdcli.data.records`).

Dataset layouts (``VOCdevkit`` or one VOC folder) and the splits written (``<split>.jsonl``): see
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
from ssdcli.data.records import FORMAT_NAME, MANIFEST_NAME, ImageRecord, write_split
from ssdcli.data.splits import holdout
from ssdcli.data.voc import PROBLEM_KINDS, VOC_CLASSES, VocAnnotation, VocObject, parse_voc_item
from ssdcli.data.voc_layout import Key, collect_items, resolve_layout
from ssdcli.errors import SsdError
from ssdcli.io_utils import atomic_write_text
from ssdcli.reporting import Reporter, as_reporter
from ssdcli.version import __version__

_EXAMPLES = 5
_SERIAL_BELOW = 1500  # fewer items than this are parsed in-process (pool start-up would cost more)
_CHUNK = 400


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
                   if k in ("bad_object", "invalid_box", "box_outside_image", "unknown_class")}  # fmt: skip
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

    def __init__(self, root: Path):
        self.root, self.stats = root, {}

    def add(self, kind: str, file: str, detail: str) -> None:
        if kind not in self.stats:
            self.stats[kind] = ProblemStat(kind, *PROBLEM_KINDS[kind])
        p = self.stats[kind]
        p.count += 1
        if len(p.examples) < _EXAMPLES:
            p.examples.append(f"{_rel(file, self.root)}: {detail}")

    def sorted(self) -> dict[str, ProblemStat]:
        return dict(sorted(self.stats.items(), key=lambda kv: (kv[1].severity != "warning", -kv[1].count)))


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
) -> PrepareReport:
    """Validate a VOC-format dataset and write ``out/manifest.json`` + ``out/<split>.jsonl``.

    ``classes``: None = the 20 VOC classes, a list (or ``"a,b,c"``), or ``"auto"`` (sorted names found).
    ``train_sets`` / ``test_sets``: see :mod:`ssdcli.data.voc_layout`. ``val_fraction``: when the source has no
    ``val`` split, this fraction of the train images (chosen by :func:`ssdcli.data.splits.holdout` from their ids
    and ``split_seed``) becomes ``val``, the split ``ssd train`` selects ``best.pth`` on; 0 keeps them all in train. ``workers``: parsing processes (default: CPU
    count; small datasets are parsed in-process). ``reporter``: a :class:`ssdcli.reporting.Reporter` (task
    ``"read annotations"``, one unit per image); None is silent. ``out=None`` only validates. Raises :class:`SsdError` for unusable
    input, :class:`PrepareFailure` when no image is usable and :class:`StrictFailure` when ``strict`` and
    problems of severity ``"warning"`` were found (nothing is written then; both carry the report).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise SsdError(f"--val-fraction {val_fraction}: expected a fraction in [0, 1) (0: no validation hold-out)")
    start = time.perf_counter()
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SsdError(f"{root}: {'not a folder' if root.exists() else 'dataset folder not found'}")
    root = root.resolve()
    class_list = _normalise_classes(classes)
    image_root, layout, split_sets = resolve_layout(root, train_sets, test_sets)
    tally = _Tally(root)
    split_items, tasks, missing = collect_items(split_sets, lambda f, image_id: tally.add("duplicate_id", f, image_id))
    no_xml = {k: VocAnnotation(k[1], xml).fail("missing_annotation", xml, "no such file") for k, xml in missing.items()}
    parsed = {**_parse_all(tasks, verify_images, workers, as_reporter(reporter)), **no_xml}
    for ann in parsed.values():
        for problem in ann.problems:
            tally.add(*problem)

    found = sorted({o.name for a in parsed.values() for o in a.objects})
    auto = class_list is None
    if class_list is None:
        if not found:
            raise SsdError(f"{root}: no objects found in the annotations, so --classes auto finds no class")
        class_list = found
    elif found and not set(found) & set(class_list):
        raise SsdError(f"{root}: no object matches the class list (found: {', '.join(found[:8])}); "
                       "use --classes auto or --classes")  # fmt: skip
    out = Path(out) if out is not None else None
    report = PrepareReport(root, out, class_list, auto, splits={}, problems={}, skipped=[], unknown_classes={})
    records = _make_records(parsed, class_list, tally, report.unknown_classes)
    split_records = {}
    for split, items in split_items.items():
        split_records[split] = _split_records(split, items, parsed, records, report.skipped)
        report.splits[split] = _split_stats([s.label for s in split_sets[split]], split_records[split], len(class_list))
    held_out = _hold_out_val(split_records, report, split_sets, val_fraction, split_seed)
    if "train" in split_items and "test" in split_items:
        for folder, image_id in sorted(set(split_items["train"]) & set(split_items["test"])):
            tally.add("split_overlap", os.path.join(folder, "Annotations", image_id + ".xml"), "in train and test")
    report.problems = tally.sorted()
    report.elapsed_s = time.perf_counter() - start
    if strict and report.warnings:
        raise StrictFailure(f"{root}: {report.warnings} problem(s) found and --strict is set; nothing written", report)
    if not any(split_records.values()):
        raise PrepareFailure(f"{root}: no usable image in any split (see the problems)", report)
    if out is not None:
        options = {
            "classes": "auto" if report.classes_auto else ("voc" if classes is None else "list"),
            "train_sets": train_sets, "test_sets": test_sets, "verify_images": verify_images, "strict": strict,
            "val_holdout": held_out,
        }  # fmt: skip
        _write(out, report, split_records, image_root, layout, split_sets, options)
        report.written = True
        report.elapsed_s = time.perf_counter() - start
    return report


def _hold_out_val(split_records: dict[str, list[ImageRecord]], report: PrepareReport, split_sets,
                  fraction: float, seed: int) -> dict | None:  # fmt: skip
    """Move a deterministic ``fraction`` of train into a new ``val`` split when the source has none."""
    train = split_records.get("train")
    if fraction == 0 or not train or "val" in split_records:
        return None
    kept, held = holdout(train, [r.id for r in train], fraction, seed)
    if not held:
        return None
    split_records["train"], split_records["val"] = kept, held
    sets = report.splits["train"].sets
    report.splits["train"] = _split_stats(sets, kept, len(report.classes))
    report.splits["val"] = _split_stats([f"{fraction:g} of {'+'.join(sets)} (seed {seed})"], held, len(report.classes))
    return {"from": "train", "fraction": fraction, "seed": seed, "images": len(held)}


def _make_records(parsed: dict[Key, VocAnnotation], classes: list[str], tally: _Tally,
                  unknown: dict[str, int]) -> dict[Key, ImageRecord]:  # fmt: skip
    index = {c: i + 1 for i, c in enumerate(classes)}
    records = {}
    for key, ann in parsed.items():
        if ann.skip is not None:
            continue
        kept = []
        for o in ann.objects:
            if o.name in index:
                kept.append(o)
            else:
                tally.add("unknown_class", ann.annotation, o.name)
                unknown[o.name] = unknown.get(o.name, 0) + 1
        if not kept:
            tally.add("no_objects", ann.annotation, "kept without boxes")
        records[key] = ImageRecord(
            id=ann.id, path=str(ann.image), width=ann.width, height=ann.height,
            boxes=np.asarray([o.box for o in kept], dtype=np.float32).reshape(-1, 4),
            labels=np.asarray([index[o.name] for o in kept], dtype=np.int64),
            difficult=np.asarray([o.difficult for o in kept], dtype=bool),
        )  # fmt: skip
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


def _normalise_classes(classes: list[str] | str | None) -> list[str] | None:
    if classes is None:
        return list(VOC_CLASSES)
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
    todo = [tasks[k] for k in keys]
    reporter.start("read annotations", len(todo), unit="img")
    workers = max(1, min(workers if workers is not None else (os.cpu_count() or 1), 32))
    chunks = [todo[i : i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
    results: list[list[tuple]] = []
    if workers == 1 or len(todo) < _SERIAL_BELOW:
        for c in chunks:
            results.append(_parse_chunk(c, verify))
            reporter.advance("read annotations", len(c))
    else:
        fork = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if fork else None)  # fork: workers need not import torch again
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx) as pool:
            for c, result in zip(chunks, pool.map(_parse_chunk, chunks, [verify] * len(chunks))):
                results.append(result)
                reporter.advance("read annotations", len(c))
    reporter.end("read annotations")
    return {k: _from_tuple(t) for k, t in zip(keys, (t for r in results for t in r))}


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
    out: Path, report: PrepareReport, split_records, image_root: Path, layout: str, split_sets, options: dict
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
        "source": {"root": str(report.root), "layout": layout,
                   "sets": {k: [s.label for s in v] for k, v in split_sets.items()}},
        "options": options,
        **report.to_manifest_parts(),
        "created": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "by": f"ssdcli {__version__}"},
    }  # fmt: skip
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")


def _rel(path: str, root: Path) -> str:
    try:
        return os.path.relpath(path, root) if path else "?"
    except ValueError:
        return path
