"""Signals as stop requests: the training loop finishes its step (or validation, or checkpoint write), saves, exits.

* The first SIGINT (Ctrl-C) or SIGTERM (cluster preemption: SLURM, Kubernetes, spot instances) only records a
  request; the loop polls :attr:`StopRequests.signum` at step boundaries, where the model, optimizer and RNG
  states are consistent, and saves there.
* A second SIGINT or SIGTERM raises :class:`KeyboardInterrupt` at once: the run aborts without saving, so the
  last good checkpoint is left as it was (checkpoint writes are atomic).
* Processes forked from the trainer (DataLoader workers) inherit the handler but ignore the signal: the main
  process owns shutdown. :func:`ignore_stop_signals` makes that explicit in worker initialisation (and bounds
  how long a worker outlives a SIGTERM).

Exit statuses follow the shell convention 128 + signal number: 130 after SIGINT, 143 after SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The status a process stopped by ``signum`` reports (shell convention): 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


WORKER_TERM_GRACE_S = 60


def ignore_stop_signals() -> None:
    """In helper processes (DataLoader workers): leave SIGINT/SIGTERM to the main process.

    SIGINT is ignored. A SIGTERM (sent to the whole process group by SLURM and the like, or by a ``terminate()``
    of a stuck worker) only arms a ``WORKER_TERM_GRACE_S`` alarm: the main process normally stops at its next step
    boundary and shuts its workers down well before; a worker nobody shuts down still ends, so nothing waits on it
    forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _end_later)


def _end_later(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM in a helper process: end within ``WORKER_TERM_GRACE_S`` unless shut down normally before."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    pending = signal.alarm(WORKER_TERM_GRACE_S)
    if pending:
        signal.alarm(pending)  # an earlier deadline stays


class StopRequests:
    """Context manager turning SIGINT/SIGTERM into a polled request (main thread only; a no-op elsewhere).

    ``notify(message)`` is called (from the signal handler, in the main thread) when the first request arrives.
    """

    def __init__(self, notify: Callable[[str], None] | None = None) -> None:
        self.signum: int | None = None
        self._notify = notify
        self._owner = os.getpid()
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        """Record a stop request as if ``signum`` had arrived (the first one wins)."""
        if self.signum is None:
            self.signum = int(signum)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != self._owner:  # a forked child (DataLoader worker): shutdown is the main process's business
            if signum == signal.SIGTERM:
                _end_later(signum, _frame)
            return
        if self.signum is not None:
            raise KeyboardInterrupt(f"second {signal_name(signum)}: aborted without saving")
        self.signum = int(signum)
        if self._notify is not None:
            self._notify(
                f"{signal_name(signum)} received: stopping after the current step to save a resumable checkpoint "
                "(press Ctrl-C again to abort at once without saving)"
            )

    def __enter__(self) -> StopRequests:  # noqa: PYI034 - Python 3.10 has no typing.Self
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._previous.clear()
