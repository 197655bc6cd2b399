"""Resumable, distributed batch sampler yielding ``(epoch, index)`` keys.

The data order is a pure function of ``(seed, epoch)``: iteration ``it`` of any run reads the same samples
whatever happened before, so a resumed run continues exactly where an uninterrupted one would be. Each rank
takes its own slice of every global batch (``batch_size`` per rank, last incomplete global batch dropped).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    def __init__(
        self, num_samples: int, batch_size: int, seed: int, start_iter: int, total_iters: int, rank: int = 0, world: int = 1
    ) -> None:
        self.n = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_iter = start_iter
        self.total_iters = total_iters
        self.rank = rank
        self.world = world
        self.iters_per_epoch = num_samples // (batch_size * world)
        if self.iters_per_epoch < 1:
            raise ValueError(f"{num_samples} training images are fewer than one global batch ({batch_size * world})")

    def __len__(self) -> int:
        return max(0, self.total_iters - self.start_iter)

    def batch_at(self, it: int, perm: torch.Tensor) -> list[tuple[int, int]]:
        epoch, pos = divmod(it, self.iters_per_epoch)
        start = (pos * self.world + self.rank) * self.batch_size
        return [(epoch, int(i)) for i in perm[start : start + self.batch_size]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm_epoch, perm = -1, torch.empty(0)
        for it in range(self.start_iter, self.total_iters):
            epoch = it // self.iters_per_epoch
            if epoch != perm_epoch:
                perm_epoch, perm = epoch, epoch_permutation(self.n, self.seed, epoch)
            yield self.batch_at(it, perm)
