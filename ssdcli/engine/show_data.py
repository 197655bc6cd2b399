"""`ssd show-data` as a library function: ground-truth boxes of a prepared split drawn on its images.

Images are decoded and drawn exactly as ``ssd detect`` draws detections (:func:`ssdcli.engine.detect.load_for_detect`,
:func:`ssdcli.visualize.draw_ground_truth`: same colours per class, line widths and tags; huge images capped at
:data:`ssdcli.visualize.MAX_DRAW_SIDE`). Difficult / crowd objects get a dashed outline and a ``(difficult)`` tag.
One picture per image, ``OUT/<id>.jpg`` (``/`` in ids becomes ``_``), plus ``OUT/mosaic.jpg``: up to
:data:`MOSAIC_MAX` of them side by side, for a first look.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ssdcli.data.records import ImageRecord, PreparedDataset, load_prepared
from ssdcli.engine.detect import load_for_detect
from ssdcli.errors import SsdError
from ssdcli.io_utils import atomic_write, check_output
from ssdcli.reporting import Reporter, as_reporter
from ssdcli.visualize import draw_ground_truth

__all__ = ["MOSAIC_MAX", "MOSAIC_NAME", "ShowDataSummary", "picture_name", "select_records", "show_data"]

MOSAIC_NAME = "mosaic.jpg"
MOSAIC_MAX = 16  # pictures in the mosaic (the first ones drawn)
_TILE = 320  # mosaic tile side, pixels
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_JPEG = {"quality": 92, "subsampling": 0}  # full-resolution colour: 1-pixel outlines keep their class colour


@dataclass
class ShowDataSummary:
    split: str
    drawn: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason)
    objects: int = 0
    difficult: int = 0
    mosaic: Path | None = None


def picture_name(image_id: str) -> str:
    """``OUT`` file name of an image id: ``2008/000123`` -> ``2008_000123.jpg`` (only safe characters)."""
    return (_UNSAFE.sub("_", image_id).strip("._") or "image") + ".jpg"


def select_records(records: Sequence[ImageRecord], split: str, num: int = 16, ids: Sequence[str] | None = None,
                   seed: int = 0) -> list[ImageRecord]:  # fmt: skip
    """The images to draw: the given ``ids`` (in that order; an unknown id is an SsdError naming it), else ``num``
    images drawn at random (seeded, without repeats; all of them when the split is smaller), in split order."""
    if ids:
        index = {r.id: r for r in records}
        unknown = [i for i in ids if i not in index]
        if unknown:
            more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
            raise SsdError(f"--ids {unknown[0]}: no image with this id in split '{split}'{more} "
                           f"(ids look like '{records[0].id}')" if records else f"--ids: split '{split}' is empty")
        return [index[i] for i in dict.fromkeys(ids)]
    if num < 1:
        raise SsdError(f"--num {num}: expected at least 1")
    if not records:
        raise SsdError(f"split '{split}' has no images")
    pick = np.sort(np.random.default_rng(seed).choice(len(records), size=min(num, len(records)), replace=False))
    return [records[i] for i in pick]


def show_data(
    prepared: str | os.PathLike,
    out: str | os.PathLike,
    *,
    split: str = "train",
    num: int = 16,
    ids: Sequence[str] | None = None,
    seed: int = 0,
    mosaic: bool = True,
    force: bool = False,
    reporter: Reporter | None = None,
    warn: Callable[[str], None] | None = None,
) -> ShowDataSummary:
    """Draw the ground truth of ``num`` random images (or ``ids``) of ``split`` into ``out``; see the module doc.

    ``reporter`` gets task ``"show-data"`` (one unit per image). Unreadable images are skipped with one ``warn``
    each. Outputs never land inside the prepared folder or on an input image, and existing pictures are replaced
    only with ``force`` (all checked before anything is drawn). Raises :class:`SsdError` for a folder that is
    not a prepared dataset, an unknown split or id, or when no image could be drawn."""
    prepared, out = Path(prepared), Path(out)
    ds: PreparedDataset = load_prepared(prepared, splits=[split])
    if split not in ds.splits:
        available = ", ".join(ds.manifest.get("splits", {})) or "none"
        raise SsdError(f"--split {split}: not a split of {prepared} (available: {available})")
    chosen = select_records(ds.splits[split], split, num, ids, seed)
    if out.exists() and not out.is_dir():
        raise SsdError(f"--out {out}: is a file; give a folder for the pictures")
    names = [picture_name(r.id) for r in chosen]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):  # two ids that differ only in unsafe characters: keep both pictures
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n[:-4]}-{seen[n]}.jpg"
    targets = [out / n for n in names] + ([out / MOSAIC_NAME] if mosaic else [])
    inputs = [r.path for r in chosen]
    for t in targets:
        check_output(t, "--out", force=force, inputs=inputs, input_folders=[prepared])
    warn = warn or (lambda message: None)
    summary = ShowDataSummary(split=split)
    tiles: list[Image.Image] = []
    reporter = as_reporter(reporter)
    reporter.start("show-data", len(chosen), unit="img")
    try:
        for rec, target in zip(chosen, targets):
            picture, tile = _draw(rec, ds.classes, summary, warn, tile=mosaic and len(tiles) < MOSAIC_MAX)
            if picture is not None:
                atomic_write(target, lambda f, p=picture: p.save(f, format="JPEG", **_JPEG))
                summary.drawn.append(target)
            if tile is not None:
                tiles.append(tile)
            reporter.advance("show-data", 1)
    finally:
        reporter.end("show-data")
    if not summary.drawn:
        raise SsdError(f"no image could be drawn: all {len(chosen)} were skipped (see the warnings above)")
    if mosaic:
        summary.mosaic = out / MOSAIC_NAME
        sheet = _mosaic(tiles)
        atomic_write(summary.mosaic, lambda f: sheet.save(f, format="JPEG", **_JPEG))
    return summary


def _draw(rec: ImageRecord, classes: list[str], summary: ShowDataSummary, warn: Callable[[str], None],
          tile: bool) -> tuple[Image.Image | None, Image.Image | None]:  # fmt: skip
    """The picture with its boxes, and (``tile``) a mosaic tile drawn at tile size (lines and tags stay readable)."""
    try:
        loaded = load_for_detect(Path(rec.path), 16, draw=True)
    except SsdError as e:
        summary.skipped.append((rec.id, str(e)))
        warn(f"skipped image '{rec.id}': {e}")
        return None, None
    picture = loaded.picture
    assert picture is not None
    small = None
    if tile:
        small = picture.copy()
        small.thumbnail((_TILE, _TILE), Image.Resampling.BILINEAR)
    names = [classes[int(k) - 1] for k in rec.labels]
    # Boxes are in the record's pixel frame (width x height of the prepared index), mapped onto the picture drawn.
    for canvas in (picture, small):
        if canvas is not None:
            draw_ground_truth(canvas, rec.boxes, rec.labels, names, rec.difficult, (rec.width, rec.height))
    summary.objects += len(rec.labels)
    summary.difficult += int(np.count_nonzero(rec.difficult))
    return picture, small


def _mosaic(tiles: list[Image.Image]) -> Image.Image:
    """Tiles (each at most ``_TILE`` px a side) centred in a grid of ``_TILE`` cells on a grey sheet."""
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * _TILE, rows * _TILE), (114, 114, 114))
    for i, t in enumerate(tiles):
        x, y = (i % cols) * _TILE + (_TILE - t.width) // 2, (i // cols) * _TILE + (_TILE - t.height) // 2
        sheet.paste(t, (x, y))
    return sheet
