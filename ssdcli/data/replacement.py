"""Training samples that survive images lost after ``prepare-voc`` (deleted, truncated, unreadable).

:class:`ReplacingDataset` wraps a :class:`~ssdcli.data.dataset.DetectionDataset`: when sample ``(epoch, index)``
cannot be read, another index drawn from ``(seed, epoch, index, attempt)`` only is read in its place, so a
resumed run replaces it exactly as an uninterrupted one would. Each item carries the paths that were found
unreadable, so the training loop can count and report them. When :data:`MAX_TRIES` draws in a row fail, most
of the data is gone and the error says so.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ssdcli.data.dataset import DetectionDataset, Sample, collate_detections
from ssdcli.data.records import ImageRecord
from ssdcli.errors import SsdError

MAX_TRIES = 16
Batch = tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[tuple[str, ...]]]


def replacement_index(seed: int, epoch: int, index: int, attempt: int, n: int) -> int:
    """A sample index other than ``index`` (when ``n`` > 1), a pure function of its arguments."""
    digest = hashlib.blake2b(f"replace/{seed}/{epoch}/{index}/{attempt}".encode(), digest_size=8).digest()
    if n <= 1:
        return 0
    j = int.from_bytes(digest, "little") % (n - 1)
    return j + 1 if j >= index else j


def count_missing(records: Sequence[ImageRecord]) -> int:
    """How many records' image files no longer exist (a cheap check before a long run)."""
    return sum(not os.path.isfile(r.path) for r in records)


class ReplacingDataset(Dataset):
    """``dataset[(epoch, index)] -> (sample, unreadable paths)``; see the module docstring."""

    def __init__(self, base: DetectionDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Sample, tuple[str, ...]]:
        epoch, index = int(key[0]), int(key[1])
        try:
            return self.base[(epoch, index)], ()
        except SsdError as e:
            first_error = str(e)
        bad = [str(self.base.records[index].path)]
        for attempt in range(1, MAX_TRIES + 1):
            j = replacement_index(self.base.seed, epoch, index, attempt, len(self.base))
            try:
                return self.base[(epoch, j)], tuple(dict.fromkeys(bad))
            except SsdError:
                bad.append(str(self.base.records[j].path))
        raise SsdError(
            f"{first_error}; {MAX_TRIES} replacement images drawn at random were unreadable too: most of the "
            "training data has vanished or been damaged since prepare-voc"
        )


def collate_with_replacements(items: Sequence[tuple[Sample, tuple[str, ...]]]) -> Batch:
    """Like :func:`collate_detections`, plus the unreadable paths met for each replaced sample of the batch."""
    images, boxes, labels = collate_detections([s for s, _ in items])
    return images, boxes, labels, [paths for _, paths in items if paths]
