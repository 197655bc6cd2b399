"""The one channel through which long library steps report to whoever runs them.

Every long workflow (prepare-voc, train, eval, detect, export-onnx, benchmark) takes a :class:`Reporter`:
one-line ``message``\\ s, counted tasks (``start`` with a known total, ``advance``, ``end``) and, for training,
``metrics`` rows (the dicts written to ``metrics.jsonl``). The library never draws anything itself: the CLI
implements the protocol once with rich (``ssdcli/cli/progress.py``); API callers pass nothing (:class:`NullReporter`),
a plain ``print``-like callable (messages only, see :func:`as_reporter`) or their own object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Reporter(Protocol):
    """Receives progress from a long step. ``task`` names a counted piece of work ("train", "eval", ...)."""

    def message(self, text: str) -> None:
        """A one-line status message (plain text, no markup)."""

    def start(self, task: str, total: int, *, unit: str = "it", done: int = 0) -> None:
        """``task`` begins (or, when already started, changes its ``total``); ``done`` units are already done."""

    def advance(self, task: str, n: int = 1, **fields: Any) -> None:
        """``n`` more units of ``task`` are done; ``fields`` are the latest figures to show (loss, lr, ...)."""

    def end(self, task: str) -> None:
        """``task`` is over (finished or abandoned)."""

    def metrics(self, row: dict[str, Any]) -> None:
        """A training metrics row (``{"type": "train" | "val", "iter": ..., ...}``, as in ``metrics.jsonl``)."""


class NullReporter:
    """Ignores everything (the default of every workflow)."""

    def message(self, text: str) -> None:
        pass

    def start(self, task: str, total: int, *, unit: str = "it", done: int = 0) -> None:
        pass

    def advance(self, task: str, n: int = 1, **fields: Any) -> None:
        pass

    def end(self, task: str) -> None:
        pass

    def metrics(self, row: dict[str, Any]) -> None:
        pass


class MessageReporter(NullReporter):
    """Passes the messages to a callable such as ``print``; ignores the rest."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def message(self, text: str) -> None:
        self.say(text)


class Fanout(NullReporter):
    """Forwards every call to each of ``reporters`` in order (e.g. the CLI's display and a run's metric files)."""

    def __init__(self, *reporters: Reporter) -> None:
        self.reporters = reporters

    def message(self, text: str) -> None:
        for r in self.reporters:
            r.message(text)

    def start(self, task: str, total: int, *, unit: str = "it", done: int = 0) -> None:
        for r in self.reporters:
            r.start(task, total, unit=unit, done=done)

    def advance(self, task: str, n: int = 1, **fields: Any) -> None:
        for r in self.reporters:
            r.advance(task, n, **fields)

    def end(self, task: str) -> None:
        for r in self.reporters:
            r.end(task)

    def metrics(self, row: dict[str, Any]) -> None:
        for r in self.reporters:
            r.metrics(row)


class RecordingReporter(NullReporter):
    """Keeps every call as a tuple in :attr:`events` (``("start", task, total, done)``, ``("advance", task, n,
    fields)``, ``("end", task)``, ``("message", text)``, ``("metrics", row)``): for tests and notebooks."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def message(self, text: str) -> None:
        self.events.append(("message", text))

    def start(self, task: str, total: int, *, unit: str = "it", done: int = 0) -> None:
        self.events.append(("start", task, total, done))

    def advance(self, task: str, n: int = 1, **fields: Any) -> None:
        self.events.append(("advance", task, n, fields))

    def end(self, task: str) -> None:
        self.events.append(("end", task))

    def metrics(self, row: dict[str, Any]) -> None:
        self.events.append(("metrics", dict(row)))

    def done(self, task: str) -> int:
        """Units of ``task`` done so far (its last ``start``'s ``done`` plus the advances after it)."""
        count = 0
        for e in self.events:
            if e[0] == "start" and e[1] == task:
                count = e[3]
            elif e[0] == "advance" and e[1] == task:
                count += e[2]
        return count

    def totals(self, task: str) -> list[int]:
        """The totals ``task`` was started with, in order."""
        return [e[2] for e in self.events if e[0] == "start" and e[1] == task]

    def kinds(self, task: str) -> list[str]:
        """The kinds of calls about ``task`` in order, with repeats collapsed: e.g. ``["start", "advance", "end"]``."""
        out: list[str] = []
        for e in self.events:
            if e[0] in ("start", "advance", "end") and e[1] == task and (not out or out[-1] != e[0]):
                out.append(e[0])
        return out


class Stages:
    """A task made of named stages (an export, a benchmark): :meth:`next` completes the current stage, if any, and
    shows the next one's name (field ``stage``); :meth:`done` completes the last one and ends the task."""

    def __init__(self, reporter: Reporter, task: str, total: int) -> None:
        self.reporter, self.task, self.begun = reporter, task, False
        reporter.start(task, total, unit="step")

    def next(self, name: str) -> None:
        self.reporter.advance(self.task, 1 if self.begun else 0, stage=name)
        self.begun = True

    def note(self, name: str) -> None:
        """Show ``name`` as the current stage without completing one (a part of the current stage)."""
        self.reporter.advance(self.task, 0, stage=name)

    def skip(self, n: int) -> None:
        """Count ``n`` planned stages as done without running them (e.g. an engine that is unavailable)."""
        self.reporter.advance(self.task, n)

    def done(self) -> None:
        if self.begun:
            self.reporter.advance(self.task, 1, stage="done")
        self.reporter.end(self.task)


def as_reporter(reporter: Reporter | Callable[[str], None] | None) -> Reporter:
    """``None`` -> :class:`NullReporter`; a plain callable -> :class:`MessageReporter`; a reporter as it is."""
    if reporter is None:
        return NullReporter()
    if isinstance(reporter, Reporter):
        return reporter
    if callable(reporter):
        return MessageReporter(reporter)
    raise TypeError(f"not a Reporter or a callable: {reporter!r}")
