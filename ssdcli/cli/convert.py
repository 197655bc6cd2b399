"""`ssd convert`: parse options, call :func:`ssdcli.convert.convert_file`, print what was converted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ssdcli.cli.console import console

FromOption = Annotated[
    str, typer.Option("--from", help="amdegroot (ssd.pytorch SSD300), torchvision (ssd300_vgg16) or auto.")
]
ClassesOption = Annotated[
    Optional[str],
    typer.Option(help="Class names: voc, coco, or a file with one name per line (default: the list that fits)."),
]
SrcArgument = Annotated[
    Path, typer.Argument(help="Foreign state dict (.pth), read with weights_only=True.", show_default=False)
]
OutputOption = Annotated[
    Path, typer.Option("--output", "-o", help="Native checkpoint to write (.pth).", show_default=False)
]


def command(
    src: SrcArgument,
    output: OutputOption,
    source_format: FromOption = "auto",
    classes: ClassesOption = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUTPUT if it exists.")] = False,
) -> None:
    """Convert weights from other SSD repos into a native checkpoint (with their priors and preprocessing)."""
    from ssdcli.convert import convert_file

    result = convert_file(src, output, source_format.lower(), classes, force)
    cfg = result.model.config
    if result.detected:
        console.print(f"--from auto: {escape(str(src))} is {escape(result.detected)}", soft_wrap=True)
    for line in result.notes:
        console.print(f"  {escape(line)}", soft_wrap=True)
    names = ", ".join(cfg.class_names[:5]) + (", ..." if len(cfg.class_names) > 5 else "")
    console.print(f"  classes: {escape(names)}", soft_wrap=True)
    what = f"{cfg.arch}, {cfg.image_size}px, {result.source_format} weights"
    console.print(f"[green]wrote[/] {escape(str(output))} ({what})", soft_wrap=True)
