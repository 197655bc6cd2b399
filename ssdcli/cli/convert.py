"""`ssd convert`: parse options, call :func:`ssdcli.convert.convert_file`, print what was converted."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ssdcli.cli.console import console
from ssdcli.cli.options import ForceOption, OldOutputOption, renamed
from ssdcli.errors import SsdError
from ssdcli.io_utils import check_output


class SourceFormat(str, enum.Enum):
    auto = "auto"
    amdegroot = "amdegroot"
    torchvision = "torchvision"


FromOption = Annotated[
    SourceFormat,
    typer.Option("--from", case_sensitive=False, metavar="<format>",
                 help="Where the weights come from: amdegroot (ssd.pytorch SSD300), torchvision (ssd300_vgg16 or "
                 "ssdlite320_mobilenet_v3_large), "
                 "or auto (recognise them)."),
]
ClassesOption = Annotated[
    Optional[str],
    typer.Option(help="Class names: voc, coco, or a file with one name per line (default: the list that fits)."),
]
SrcArgument = Annotated[
    Optional[Path],
    typer.Argument(help="Foreign state dict (.pth), read with weights_only=True (or give it with --weights).",
                   show_default=False),
]
OutOption = Annotated[
    Optional[Path], typer.Option("--out", "-o", help="Native checkpoint to write (.pth).", show_default=False)
]


def command(
    src: SrcArgument = None,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", "-w", help="Foreign state dict to convert (same as the argument).")] = None,
    out: OutOption = None,
    source_format: FromOption = SourceFormat.auto,
    classes: ClassesOption = None,
    force: ForceOption = False,
    old_output: OldOutputOption = None,
) -> None:
    """Convert weights from other SSD repos into a native checkpoint (with their priors and preprocessing)."""
    from ssdcli.convert import convert_file

    if (src is None) == (weights is None):
        raise SsdError("SRC/--weights: give the weights to convert once (e.g. `ssd convert ssd300.pth -o out.pth`)")
    src = src or weights
    out = renamed("out", "old_output")
    if out is None:
        raise SsdError("--out: missing; give the native checkpoint to write, e.g. -o ssd300-native.pth")
    check_output(out, "--out", force=force, inputs=[src])
    result = convert_file(src, out, source_format.value, classes, force)
    cfg = result.model.config
    if result.detected:
        console.print(f"--from auto: {escape(str(src))} is {escape(result.detected)}", soft_wrap=True)
    for line in result.notes:
        console.print(f"  {escape(line)}", soft_wrap=True)
    names = ", ".join(cfg.class_names[:5]) + (", ..." if len(cfg.class_names) > 5 else "")
    console.print(f"  classes: {escape(names)}", soft_wrap=True)
    what = f"{cfg.arch}, {cfg.image_size}px, {result.source_format} weights"
    console.print(f"[green]wrote[/] {escape(str(out))} ({what})", soft_wrap=True)
