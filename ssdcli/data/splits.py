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


def stratified_split(ids: Sequence[str], strata: Sequence[int], fractions: Sequence[float], seed: int = 0) -> list[int]:
    """Split index (into ``fractions``) of each item: a seeded split stratified by ``strata`` (e.g. rarest class).

    Within each stratum the items are ordered by :func:`hash_rank` and given evenly spread positions
    ``(rank + 0.5) / size`` in ``(0, 1)``; all items are then sorted by position (ties by hash rank) and cut into
    ``round(fraction * n)`` consecutive items per split (the first split takes the rest). So every stratum is
    represented in each split in proportion as far as its size allows (a stratum of one image goes to the first
    split), totals are exact, and the result depends only on the ids, strata and seed, never on the input order.
    """
    n = len(ids)
    if n == 0:
        return []
    if len(fractions) < 1 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    ranks = [hash_rank(i, seed) for i in ids]
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(s, []).append(i)
    position = [0.0] * n
    for members in groups.values():
        members.sort(key=lambda i: ranks[i])
        for r, i in enumerate(members):
            position[i] = (r + 0.5) / len(members)
    order = sorted(range(n), key=lambda i: (position[i], ranks[i]))
    sizes = [round(f * n) for f in fractions[1:]]
    while sum(sizes) > n - 1 and any(sizes):  # the first split keeps at least one item
        sizes[max(range(len(sizes)), key=lambda k: sizes[k])] -= 1
    cuts = [n - sum(sizes)]
    for s in sizes:
        cuts.append(cuts[-1] + s)
    out = [0] * n
    for split, (a, b) in enumerate(zip([0] + cuts[:-1], cuts)):
        for i in order[a:b]:
            out[i] = split
    return out
