"""Deterministic splits made by ``prepare-*`` when a source has no split of its own.

An image's side of a split depends only on its id and the seed (a hash rank), never on the order of the source's
listing, so re-preparing a dataset (or the same images in another format) gives the same split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def hash_rank(image_id: str, seed: int) -> int:
    """A stable pseudo-random rank of ``image_id`` (same on every machine and Python version)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest(), "big")


def holdout(items: Sequence[T], ids: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """Split ``items`` (with their ``ids``) into ``(kept, held_out)``; ``round(fraction * n)`` items are held out.

    Both lists keep the input order. ``fraction`` 0 holds out nothing. At least one item is always kept.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in [0, 1), got {fraction}")
    n = len(items)
    k = min(int(round(fraction * n)), n - 1) if n else 0
    if k <= 0:
        return list(items), []
    chosen = set(sorted(range(n), key=lambda i: hash_rank(ids[i], seed))[:k])
    kept = [x for i, x in enumerate(items) if i not in chosen]
    held = [x for i, x in enumerate(items) if i in chosen]
    return kept, held
