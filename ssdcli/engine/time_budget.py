"""Fit a training schedule to a wall-clock budget (``ssd train --time-limit``).

The learning-rate schedule is a pure function of ``(iteration, total)``; under a time limit ``total`` is not known
in advance. :class:`TimeBudget` measures what an iteration really costs (data loading included: the time between
two steps, median of a recent window) and what each validation + checkpoint costs, then sets ``total`` so that the
run reaches it, and the lr its final value, when the budget runs out. It re-fits as the run goes (throughput
drifts on shared machines) and accepts a new total only when it moves by more than ``tolerance``, so the schedule
does not jitter. The clock is injectable for tests.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

_SKIP_FIRST = 2


class TimeBudget:
    def __init__(
        self,
        limit_s: float,
        *,
        spent_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        probe_iters: int = 8,
        window: int = 50,
        tolerance: float = 0.02,
    ) -> None:
        self.limit_s = float(limit_s)
        self.clock = clock
        self._spent_before = float(spent_s)  # time used by earlier processes of this run (resume)
        self._t0 = clock()
        self._last_step: float | None = None
        self._gaps_seen = 0
        self._steps: deque[float] = deque(maxlen=window)
        self._overheads: deque[float] = deque(maxlen=4)  # seconds per validation + checkpoint
        self.probe_iters = probe_iters
        self.tolerance = tolerance

    # -- measurements ------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self._spent_before + (self.clock() - self._t0)

    def remaining(self) -> float:
        return max(0.0, self.limit_s - self.elapsed())

    def expired(self) -> bool:
        return self.elapsed() >= self.limit_s

    def step_done(self) -> None:
        """Call after every training step; the gap since the previous call is one step's cost."""
        now = self.clock()
        if self._last_step is not None:
            self._gaps_seen += 1
            if self._gaps_seen > _SKIP_FIRST:  # the very first steps (allocator, worker start-up) are slow
                self._steps.append(now - self._last_step)
        self._last_step = now

    def overhead(self, seconds: float) -> None:
        """Record a validation/checkpoint pause (not counted as step time)."""
        self._overheads.append(float(seconds))
        self._last_step = self.clock()

    @property
    def ready(self) -> bool:
        return len(self._steps) >= self.probe_iters

    def seconds_per_step(self) -> float | None:
        return statistics.median(self._steps) if self._steps else None

    # -- the fit -----------------------------------------------------------------------------------------------
    def fit_total(self, it: int, current_total: int, every: int) -> int:
        """The schedule length that ends when the budget does, from iteration ``it``.

        ``every``: iterations between validations (each costs the measured overhead). Returns ``current_total``
        until enough steps were measured, or when the new estimate is within ``tolerance`` of it.
        """
        sps = self.seconds_per_step()
        if not self.ready or sps is None or sps <= 0:
            return current_total
        per_val = statistics.median(self._overheads) if self._overheads else 0.0
        # remaining = n * sps + (n / every + 1) * per_val  (the last validation + save happen at the end)
        usable = self.remaining() - per_val
        n = max(0, int(usable / (sps + per_val / max(every, 1))))
        total = max(it + 1, it + n)
        if abs(total - current_total) <= self.tolerance * max(current_total, 1):
            return current_total
        return total
