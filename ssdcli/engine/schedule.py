"""Learning-rate schedule as a pure function of the iteration (so resuming needs no scheduler state)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LRSchedule:
    base_lr: float
    total_iters: int
    warmup_iters: int = 500
    warmup_factor: float = 1.0 / 3
    kind: str = "step"  # "step": x0.1 at each milestone; "cosine": cosine decay to min_factor
    milestones: tuple[float, ...] = (80_000 / 120_000, 100_000 / 120_000)  # fractions of total_iters
    gamma: float = 0.1
    min_factor: float = 0.01

    def factor(self, it: int) -> float:
        """Multiplier of the base lr at iteration ``it`` (0-based)."""
        if self.warmup_iters > 0 and it < self.warmup_iters:
            alpha = it / self.warmup_iters
            warm = self.warmup_factor * (1 - alpha) + alpha
        else:
            warm = 1.0
        if self.kind == "cosine":
            start = min(self.warmup_iters, self.total_iters)
            span = max(1, self.total_iters - start)
            t = min(1.0, max(0.0, (it - start) / span))
            decay = self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
        else:
            passed = sum(1 for m in self.milestones if it >= round(m * self.total_iters))
            decay = self.gamma**passed
        return warm * decay

    def lr(self, it: int) -> float:
        return self.base_lr * self.factor(it)
