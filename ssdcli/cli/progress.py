"""Rich live displays shared by commands."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ssdcli.cli.console import console


def task_progress() -> Progress:
    """A progress bar for counted work (images, files) printing through the shared console."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


class TrainProgress:
    """Iteration bar with ETA, running losses, lr and images/s."""

    def __init__(self, total: int, start: int) -> None:
        self.images_per_s = 0.0
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=console,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, stats="")
        self.progress.start()

    def update(self, iteration: int, losses: dict[str, float], lr: float) -> None:
        parts = [f"{k} {v:.3f}" for k, v in losses.items() if k != "total"]
        parts += [f"lr {lr:.2e}", f"{self.images_per_s:.1f} img/s"]
        self.progress.update(self.task, completed=iteration, stats="  ".join(parts))

    def close(self) -> None:
        self.progress.stop()
