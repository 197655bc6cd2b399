"""The detection JSON format shared by ``ssd detect --json`` and ``ssd eval --detections``.

A file is a JSON list with one entry per detection::

    [{"image_id": "000005", "label": "chair", "score": 0.93, "box": [263.0, 211.0, 324.0, 339.0]}, ...]

``image_id`` is the ``id`` of the image in the prepared split, ``label`` a class *name*, ``box`` is
``[xmin, ymin, xmax, ymax]`` in the VOC pixel convention of :mod:`ssdcli.boxes` (the numbers as written in the
VOC annotation XML: 1-based inclusive pixels). The order of the list matters only for exact score ties, which
the VOC metric breaks by list position (see :mod:`ssdcli.metrics.voc`).

Validation (:func:`detections_to_arrays`): detections naming images that are not in the split are an error
(:class:`SsdError` with the count and examples); unknown class names are counted and ignored; entries with a
NaN/Inf score or box coordinate are counted and dropped; structurally broken entries are an error naming the
entry.
"""

from __future__ import annotations

import json
import numbers
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path
from typing import Sequence

import numpy as np

from ssdcli.errors import SsdError, first_line
from ssdcli.io_utils import atomic_write_text

__all__ = ["DetectionArrays", "DetectionCheck", "read_detections", "write_detections", "detections_to_arrays"]

_EXAMPLES = 3
_KEYS = ("image_id", "label", "score", "box")
_NUMBER_TYPES = {int, float, type(None)}  # None: a missing value, dropped like NaN
_INT_LIMIT = 10**300  # beyond this an integer has no float64 value


@dataclass
class DetectionArrays:
    """Validated detections as arrays, in the order of the input list."""

    image_index: np.ndarray  # int64 [N], index into the split's records
    class_index: np.ndarray  # int64 [N], 0-based foreground class (label - 1)
    scores: np.ndarray  # float64 [N]
    boxes: np.ndarray  # float64 [N,4], VOC pixel convention

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> "DetectionArrays":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, 4), np.float64))


@dataclass
class DetectionCheck:
    """What validation kept and dropped."""

    total: int = 0
    kept: int = 0
    unknown_classes: dict[str, int] = field(default_factory=dict)  # name -> number of detections ignored
    non_finite: int = 0  # detections dropped for a NaN/Inf score or box coordinate

    def warnings(self, source: str = "detections") -> list[str]:
        out = []
        if self.total == 0:
            out.append(f"{source}: no detections; every class with ground truth scores AP 0 (mAP 0)")
        if self.unknown_classes:
            n = sum(self.unknown_classes.values())
            names = ", ".join(f"'{k}' ({v})" for k, v in list(self.unknown_classes.items())[:_EXAMPLES])
            more = "" if len(self.unknown_classes) <= _EXAMPLES else f" and {len(self.unknown_classes) - _EXAMPLES} more"
            out.append(f"{source}: ignored {n} detections of {len(self.unknown_classes)} unknown classes: {names}{more}")
        if self.non_finite:
            out.append(f"{source}: dropped {self.non_finite} detections with a NaN/Inf score or box coordinate")
        return out

    def to_dict(self) -> dict:
        return {"total": self.total, "kept": self.kept, "unknown_classes": dict(self.unknown_classes),
                "non_finite": self.non_finite}


def read_detections(path: str | os.PathLike) -> list[dict]:
    """Read a detection JSON file. Any unreadable/malformed file -> one-line :class:`SsdError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SsdError(f"{path}: detections file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SsdError(f"{path}: cannot read detections ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SsdError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except RecursionError:
        raise SsdError(f"{path}: not a detections file (JSON nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise SsdError(f"{path}: not valid JSON ({first_line(e)})") from None
    if not isinstance(data, list):
        raise SsdError(f"{path}: expected a JSON list of detections, got a JSON {type(data).__name__}")
    return data


def write_detections(path: str | os.PathLike, detections: Sequence[dict]) -> None:
    """Write detections atomically, one entry per line (readable and diff-friendly)."""
    body = ",\n".join(json.dumps(d, separators=(", ", ": ")) for d in detections)
    atomic_write_text(path, "[\n" + body + "\n]\n" if body else "[]\n")


def _entry_problem(d: object) -> str | None:
    if not isinstance(d, dict):
        return f"expected an object, got {type(d).__name__}"
    for key in _KEYS:
        if key not in d:
            return f"missing key '{key}'"
    if isinstance(d["label"], (list, dict)):
        return "'label' must be a class name"
    if isinstance(d["image_id"], bool) or not isinstance(d["image_id"], (str, int)):
        return "'image_id' must be text"
    box = d["box"]
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return "'box' must be a list [xmin, ymin, xmax, ymax]"
    for v in (*box, d["score"]):
        if v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real)):
            return f"non-numeric score or box value {str(v)[:40]!r} (numbers only, not text or true/false)"
        if isinstance(v, int) and not -_INT_LIMIT < v < _INT_LIMIT:
            return f"score or box value with {len(str(abs(v)))} digits, too large for a number"
    return None


def _raise_first_problem(detections: Sequence[object], source: str, fallback: Exception) -> None:
    for i, d in enumerate(detections):
        problem = _entry_problem(d)
        if problem:
            raise SsdError(f"{source}: detection #{i}: {problem}")
    raise SsdError(f"{source}: malformed detections ({fallback})")


def detections_to_arrays(
    detections: Sequence[dict], image_ids: Sequence[str], class_names: Sequence[str], source: str = "detections"
) -> tuple[DetectionArrays, DetectionCheck]:
    """Validate detection dicts against a split and convert them to :class:`DetectionArrays`.

    ``image_ids``: the split's record ids (position = image index); ``class_names``: foreground names
    (position + 1 = label). ``source`` names the input in messages (usually the file name).
    """
    if not isinstance(detections, (list, tuple)):
        raise SsdError(f"{source}: expected a list of detections, got {type(detections).__name__}")
    check = DetectionCheck(total=len(detections))
    n = len(detections)
    if not n:
        return DetectionArrays.empty(), check
    try:  # C-level passes (itemgetter/map/fromiter): ~1M detections per second on one core
        ids, labels, score_list, box_list = (list(map(itemgetter(k), detections)) for k in _KEYS)
        if set(map(len, box_list)) != {4}:
            raise ValueError("box length")
        if not set(map(type, chain(score_list, chain.from_iterable(box_list)))) <= _NUMBER_TYPES:
            # "0.9" and true would convert silently below; NumPy numbers (from Python callers) are fine
            for i, d in enumerate(detections):
                problem = _entry_problem(d)
                if problem:
                    raise SsdError(f"{source}: detection #{i}: {problem}")
        scores = np.array(score_list, dtype=np.float64)
        try:
            boxes = np.fromiter(chain.from_iterable(box_list), dtype=np.float64, count=4 * n).reshape(n, 4)
        except TypeError:  # e.g. null coordinates: the slower path turns them into NaN (counted, dropped)
            boxes = np.array(box_list, dtype=np.float64).reshape(n, 4)
        if scores.shape != (n,):
            raise ValueError("score shape")
        index = {rid: i for i, rid in enumerate(image_ids)}
        image_index = np.fromiter(map(index.get, ids, repeat(-1)), dtype=np.int64, count=n)
        if (image_index < 0).any():  # ids written as numbers: compare as text
            image_index = np.fromiter(map(index.get, map(str, ids), repeat(-1)), dtype=np.int64, count=n)
        cls_of = {name: i for i, name in enumerate(class_names)}
        class_index = np.fromiter(map(cls_of.get, labels, repeat(-1)), dtype=np.int64, count=n)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        _raise_first_problem(detections, source, e)
    unknown_img = image_index < 0
    if unknown_img.any():
        bad = list(dict.fromkeys(str(i) for i, u in zip(ids, unknown_img) if u))
        examples = ", ".join(repr(b) for b in bad[:_EXAMPLES])
        raise SsdError(
            f"{source}: {int(unknown_img.sum())} detections name {len(bad)} image ids that are not in the split "
            f"(e.g. {examples})"
        )
    unknown_cls = class_index < 0
    if unknown_cls.any():
        check.unknown_classes = dict(Counter(str(lab) for lab, u in zip(labels, unknown_cls) if u).most_common())
    finite = np.isfinite(scores) & np.isfinite(boxes).all(axis=1)
    check.non_finite = int((~finite & ~unknown_cls).sum())
    keep = finite & ~unknown_cls
    check.kept = int(keep.sum())
    arrays = DetectionArrays(image_index[keep], class_index[keep], scores[keep], boxes[keep])
    return arrays, check
