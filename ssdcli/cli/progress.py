"""The CLI's one implementation of :class:`ssdcli.reporting.Reporter`: rich progress bars with ETA.

Every long step of every command reports through :func:`reporting`: one bar per task (count, rate, elapsed,
time remaining, the task's latest figures), and messages printed above the bars through the shared console.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ssdcli.cli.console import console


class _RateColumn(ProgressColumn):
    """Units per second (rich's running estimate), e.g. ``12.3 img/s``."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text("" if not speed else f"{speed:.3g} {unit}/s", style="progress.data.speed")


def format_fields(fields: dict[str, Any]) -> str:
    """A task's figures on one line: ``loc 1.234  conf 2.345  lr 1.00e-03  31.2 img/s`` (losses without the
    ``loss_`` prefix, the total left out: it is the sum shown by the others)."""
    parts = []
    for key, value in fields.items():
        if key == "loss_total":
            continue
        if key == "stage":
            parts.append(str(value))
        elif key == "images_per_s":
            if value:
                parts.append(f"{value:.1f} img/s")
        elif key == "lr":
            parts.append(f"lr {value:.2e}")
        elif isinstance(value, float):
            parts.append(f"{key.removeprefix('loss_')} {value:.3f}")
        else:
            parts.append(f"{key} {value}")
    return "  ".join(parts)


class RichReporter:
    """A :class:`ssdcli.reporting.Reporter` drawing one rich bar per task; use it through :func:`reporting`."""

    def __init__(self, out: Console = console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=out,
        )
        self.tasks: dict[str, TaskID] = {}

    def message(self, text: str) -> None:
        self.progress.console.print(escape(text), soft_wrap=True)

    def start(self, task: str, total: int, *, unit: str = "it", done: int = 0) -> None:
        tid = self.tasks.get(task)
        running = tid is not None and next(t for t in self.progress.tasks if t.id == tid).stop_time is None
        if running:  # a new total for a running task
            self.progress.update(tid, total=total, completed=done)
        elif tid is not None:  # the same kind of work again (each validation of a training): a fresh clock
            self.progress.reset(tid, total=total, completed=done)
        else:
            self.tasks[task] = self.progress.add_task(task, total=total, completed=done, unit=unit, stats="")
        if not self.progress.live.is_started:
            self.progress.start()

    def advance(self, task: str, n: int = 1, **fields: Any) -> None:
        if task not in self.tasks:
            return
        if fields:
            self.progress.update(self.tasks[task], advance=n, stats=escape(format_fields(fields)))
        else:
            self.progress.advance(self.tasks[task], n)

    def end(self, task: str) -> None:
        if task in self.tasks:
            self.progress.stop_task(self.tasks[task])

    def metrics(self, row: dict[str, Any]) -> None:
        pass  # the run's files get the rows; the bar shows the running figures

    def close(self, keep: bool = True) -> None:
        """Stop the bars; ``keep=False`` (after an error) erases them, so the error is the command's one line."""
        if self.progress.live.is_started:
            self.progress.live.transient = not keep
            self.progress.stop()


@contextmanager
def reporting(out: Console = console) -> Iterator[RichReporter]:
    """``with reporting() as reporter: workflow(..., reporter=reporter)``: the bars stop at the end of the block
    and stay on screen, so what is printed next comes below them; an error or Ctrl-C erases them first."""
    reporter = RichReporter(out)
    try:
        yield reporter
    except BaseException:
        reporter.close(keep=False)
        raise
    reporter.close()
