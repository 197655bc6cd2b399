"""Root of the ``ssd`` command: registers one module per subcommand, nothing else."""

from __future__ import annotations

import typer

from ssdcli.cli import benchmark, convert, detect, eval as eval_cmd, export_onnx, prepare_voc, quickstart, train
from ssdcli.cli.guard import guarded

app = typer.Typer(
    name="ssd",
    help="Single-shot object detectors (SSD300/512, SSDLite, CenterNet) from dataset to deployment.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

COMMANDS = [
    ("prepare-voc", prepare_voc.command, "Validate a VOC-format dataset and write a prepared index."),
    ("train", train.command, "Train a detector on a prepared dataset (resumable, AMP, multi-GPU)."),
    ("eval", eval_cmd.command, "Evaluate a checkpoint, ONNX model or detection file (VOC07/VOC12/COCO)."),
    ("detect", detect.command, "Run a model on images and folders; draw and export detections."),
    ("export-onnx", export_onnx.command, "Export a checkpoint to ONNX (optionally with NMS in the graph)."),
    ("benchmark", benchmark.command, "Measure latency/throughput of torch, compiled and ONNX Runtime engines."),
    ("quickstart", quickstart.command, "Run the whole path on built-in sample data, no downloads."),
    ("convert", convert.command, "Convert weights from other SSD repos into a native checkpoint."),
]

for _name, _fn, _help in COMMANDS:
    app.command(_name, help=_help)(guarded(_fn))


def main() -> None:
    app()
