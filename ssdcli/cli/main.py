"""Root of the ``ssd`` command: registers one module per subcommand, nothing else."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ssdcli.cli import (
    benchmark,
    convert,
    detect,
    export_onnx,
    prepare_coco,
    prepare_voc,
    prepare_yolo,
    quickstart,
    show_data,
    train,
)
from ssdcli.cli import eval as eval_cmd
from ssdcli.cli.console import error
from ssdcli.cli.guard import guarded
from ssdcli.cli.options import OptionValueError
from ssdcli.version import __version__

try:  # Typer >= 0.22 vendors Click
    from typer._click.exceptions import BadParameter, ClickException, MissingParameter
except ImportError:  # pragma: no cover - older Typer with Click installed
    from click.exceptions import BadParameter, ClickException, MissingParameter


class OneLineErrors(TyperGroup):
    """Command-line mistakes (unknown option, value out of range, wrong choice) as one red line, exit code 2,
    like the errors of the commands themselves."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `ssd` alone: help was printed
                sys.exit(e.exit_code)
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            error(escape(_one_line(e)) + hint)
            sys.exit(e.exit_code)
        except typer.Abort:
            error("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(e: ClickException) -> str:
    """``--option VALUE: why`` for refused values, Click's own message otherwise; whitespace collapsed."""
    param = getattr(e, "param", None)
    refused = isinstance(e, BadParameter) and not isinstance(e, MissingParameter) and param is not None
    message = e.message.replace("Value error, ", "") if refused else e.format_message()
    if refused:
        flag = param.opts[0] if param.opts else param.name
        message = f"{flag} {message}" if isinstance(e, OptionValueError) else f"{flag}: {message}"
    return " ".join(message.split())


app = typer.Typer(
    cls=OneLineErrors,
    name="ssd",
    help="Single-shot object detectors (SSD300/512, SSDLite, CenterNet) from dataset to deployment.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

COMMANDS = [
    ("prepare-voc", prepare_voc.command, "Validate a VOC-format dataset and write a prepared index."),
    ("prepare-coco", prepare_coco.command, "Validate COCO instance JSON data and write a prepared index."),
    ("prepare-yolo", prepare_yolo.command, "Validate a YOLO dataset (data.yaml) and write a prepared index."),
    ("train", train.command, "Train a detector on a prepared dataset (resumable, AMP, multi-GPU)."),
    ("eval", eval_cmd.command, "Evaluate a checkpoint, ONNX model or detection file (VOC07/VOC12/COCO)."),
    ("detect", detect.command, "Run a model on images and folders; draw and export detections."),
    ("show-data", show_data.command, "Draw the ground-truth boxes of a prepared split on its images."),
    ("export-onnx", export_onnx.command, "Export a checkpoint to ONNX (optionally with NMS in the graph)."),
    ("benchmark", benchmark.command, "Measure latency/throughput of torch, compiled and ONNX Runtime engines."),
    ("quickstart", quickstart.command, "Run the whole path on built-in sample data, no downloads."),
    ("convert", convert.command, "Convert weights from other SSD repos into a native checkpoint."),
]

def _version(value: bool) -> None:
    if value:
        typer.echo(f"ssd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", is_eager=True, callback=_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Single-shot object detectors (SSD300/512, SSDLite, CenterNet) from dataset to deployment."""


for _name, _fn, _help in COMMANDS:
    app.command(_name, help=_help)(guarded(_fn))


def main() -> None:
    app()
