"""`ssd show-data`: draw the ground truth of a prepared split (options -> :func:`ssdcli.engine.show_data.show_data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ssdcli.cli.console import console, warn
from ssdcli.cli.options import ForceOption, ranged_option
from ssdcli.cli.progress import reporting
from ssdcli.errors import SsdError


def command(
    prepared: Annotated[Path, typer.Argument(help="Prepared dataset folder (from `ssd prepare-voc`).",
                                             show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the pictures (<id>.jpg and mosaic.jpg).",
                                      show_default=False)],
    split: Annotated[str, typer.Option("--split", help="Split of the prepared dataset.")] = "train",
    num: Annotated[int, ranged_option("--num", "-n", help="Images drawn at random (seeded) when --ids is not given.",
                                      lo=1)] = 16,
    ids: Annotated[Optional[str], typer.Option(
        "--ids", help="Comma-separated image ids to draw instead of a random sample.")] = None,
    seed: Annotated[int, ranged_option("--seed", help="Seed of the random sample.", lo=0)] = 0,
    mosaic: Annotated[bool, typer.Option("--mosaic/--no-mosaic", help="Also write mosaic.jpg (up to 16 pictures).")
                      ] = True,
    force: ForceOption = False,
) -> None:
    """Draw ground-truth boxes (as `ssd detect` draws detections; difficult/crowd objects dashed) on a sample of a
    prepared split, to check the labels."""
    from ssdcli.engine.show_data import show_data

    wanted = [i.strip() for i in ids.split(",") if i.strip()] if ids is not None else None
    if wanted == []:
        raise SsdError("--ids: no id given (comma-separated image ids, e.g. --ids 000005,000007)")
    with reporting() as reporter:
        summary = show_data(prepared, out, split=split, num=num, ids=wanted, seed=seed, mosaic=mosaic, force=force,
                            reporter=reporter, warn=lambda m: warn(escape(m)))
    skipped = f", {len(summary.skipped)} skipped (unreadable)" if summary.skipped else ""
    console.print(f"Drew {len(summary.drawn)} images of split '{escape(split)}' ({summary.objects} objects, "
                  f"{summary.difficult} difficult, dashed){skipped} into [bold]{escape(str(out))}[/]")
    if summary.mosaic is not None:
        console.print(f"mosaic: {escape(str(summary.mosaic))}")
