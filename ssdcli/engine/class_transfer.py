"""Which trained class rows a fine-tuned model keeps: class names matched between a checkpoint and a dataset.

Names match case-insensitively, through a small alias table (VOC's spellings of COCO classes), or through the
user's ``--class-map`` (``NEW=OLD`` pairs: a dataset class = a checkpoint class; given inline ``a=b,c=d`` or as a
file with one pair a line). Background always keeps its row; unmatched classes start fresh. The family decides
which tensors hold the rows (:meth:`ssdcli.models.base.DetectorModel.transfer_class_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ssdcli.errors import SsdError

# VOC name -> COCO name, for classes both datasets have under different spellings (case already ignored)
ALIASES: dict[str, str] = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "tvmonitor": "tv",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
}


def _canonical(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)


@dataclass
class ClassTransfer:
    """The outcome of matching: ``rows`` for :meth:`transfer_class_rows` and one ``(new, old, how)`` row per class
    of the new list (``old`` None: starts fresh; ``how``: name, alias, --class-map or fresh)."""

    rows: list[int]  # [num_classes], background (0) first: source class index or -1
    table: list[tuple[str, str | None, str]]

    @property
    def kept(self) -> int:
        return sum(1 for _, old, _ in self.table if old is not None)

    def rows_tensor(self) -> torch.Tensor:
        return torch.tensor(self.rows, dtype=torch.long)

    def to_dict(self) -> dict:
        return {"kept": self.kept, "fresh": len(self.table) - self.kept,
                "classes": [{"class": new, "from": old, "how": how} for new, old, how in self.table]}  # fmt: skip

    def text(self, source: str) -> str:
        """The mapping as an aligned table (one class a line) for the run log."""
        width = max((len(new) for new, _, _ in self.table), default=5)
        head = (f"class heads from {source}: {self.kept} of {len(self.table)} classes keep trained rows, "
                f"{len(self.table) - self.kept} start fresh; background kept")  # fmt: skip
        lines = [head]
        for new, old, how in self.table:
            origin = old if old is not None else "(fresh)"
            lines.append(f"  {new:<{width}}  <- {origin}" + ("" if how in ("name", "fresh") else f"  ({how})"))
        return "\n".join(lines)


def parse_class_map(spec: str | None) -> dict[str, str]:
    """``--class-map``: ``NEW=OLD`` pairs, inline (comma-separated) or in a file (one pair a line, # comments)."""
    if not spec:
        return {}
    path = Path(spec)
    if path.is_file():
        text, where = path.read_text(encoding="utf-8"), f"--class-map {spec}"
        items = [line.split("#", 1)[0] for line in text.splitlines()]
    else:
        where, items = "--class-map", spec.split(",")
    pairs: dict[str, str] = {}
    for item in (i.strip() for i in items):
        if not item:
            continue
        new, sep, old = (part.strip() for part in item.partition("="))
        if not sep or not new or not old:
            raise SsdError(f"{where}: '{item}' is not NEW=OLD (a dataset class = a checkpoint class, e.g. "
                           f"aeroplane=airplane)")  # fmt: skip
        if new.lower() in (k.lower() for k in pairs):
            raise SsdError(f"{where}: class '{new}' is mapped twice")
        pairs[new] = old
    return pairs


def match_classes(old_names: list[str], new_names: list[str], class_map: dict[str, str] | None = None,
                  source: str = "--weights") -> ClassTransfer:  # fmt: skip
    """Match the new (dataset) classes to the old (checkpoint) ones; see the module docstring."""
    class_map = class_map or {}
    old_index = {n.strip().lower(): i for i, n in enumerate(old_names)}
    old_canon = {}
    for i, n in enumerate(old_names):
        old_canon.setdefault(_canonical(n), i)
    new_lower = {n.strip().lower(): n for n in new_names}
    for new, old in class_map.items():
        if new.strip().lower() not in new_lower:
            raise SsdError(f"--class-map: '{new}' is not a class of the dataset ({', '.join(new_names[:8])}"
                           f"{', ...' if len(new_names) > 8 else ''})")  # fmt: skip
        if old.strip().lower() not in old_index:
            raise SsdError(f"--class-map: '{old}' is not a class of {source} ({', '.join(old_names[:8])}"
                           f"{', ...' if len(old_names) > 8 else ''})")  # fmt: skip
    user = {new.strip().lower(): old_index[old.strip().lower()] for new, old in class_map.items()}
    rows, table = [0], []
    for name in new_names:
        key = name.strip().lower()
        if key in user:
            i, how = user[key], "--class-map"
        elif key in old_index:
            i, how = old_index[key], "name"
        elif _canonical(name) in old_canon:
            i, how = old_canon[_canonical(name)], "alias"
        else:
            i, how = -1, "fresh"
        rows.append(i + 1 if i >= 0 else -1)
        table.append((name, old_names[i] if i >= 0 else None, how))
    return ClassTransfer(rows, table)
