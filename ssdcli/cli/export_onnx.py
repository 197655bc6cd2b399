"""`ssd export-onnx`: parse options, call :func:`ssdcli.deploy.onnx_export.export_onnx`, print the check table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ssdcli.cli.console import console, warn
from ssdcli.cli.options import (
    ConfOption,
    ForceOption,
    IouOption,
    MaxDetOption,
    OldNmsIouOption,
    OldOutputOption,
    OldTopKOption,
    postprocess_config,
    ranged_option,
    renamed,
)
from ssdcli.cli.progress import reporting
from ssdcli.deploy.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from ssdcli.errors import SsdError
from ssdcli.io_utils import check_output


def command(
    checkpoint: Annotated[Optional[Path], typer.Argument(
        help="Native checkpoint (.pth) to export (or give it with --weights).", show_default=False)] = None,
    weights: Annotated[Optional[Path], typer.Option(
        "--weights", "-w", help="Native checkpoint (.pth) to export (same as the argument).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="ONNX file to write (default: the checkpoint with .onnx).")] = None,
    opset: Annotated[int, ranged_option("--opset", help="ONNX opset.", lo=MIN_OPSET, hi=MAX_OPSET)] = DEFAULT_OPSET,
    static: Annotated[bool, typer.Option(
        "--static", help="Fixed batch size 1 instead of a dynamic batch axis.")] = False,
    half: Annotated[bool, typer.Option(
        "--half", help="float16 weights and input (post-processing stays float32).")] = False,
    nms: Annotated[bool, typer.Option(
        "--nms/--no-nms", help="Decode + NMS inside the graph, or raw outputs + a .priors.npy file.")] = True,
    check_images: Annotated[Optional[Path], typer.Option(
        "--check-images", help="Image file or folder for the ONNX Runtime vs PyTorch check (default: synthetic "
        "images).")] = None,
    force: ForceOption = False,
    conf: ConfOption = 0.01,
    iou: IouOption = 0.45,
    max_det: MaxDetOption = 200,
    pre_nms_top_k: Annotated[int, ranged_option(
        "--pre-nms-top-k", help="Candidates kept per class before NMS.", lo=1)] = 400,
    old_output: OldOutputOption = None,
    old_nms_iou: OldNmsIouOption = None,
    old_top_k: OldTopKOption = None,
) -> None:
    """Export a checkpoint to ONNX and check it against PyTorch with ONNX Runtime before writing it.

    With --nms (default) --conf, --iou and --max-det are baked into the graph.
    """
    from ssdcli.deploy.onnx_export import export_onnx

    pp = postprocess_config(conf, renamed("iou", "old_nms_iou"), renamed("max_det", "old_top_k"), pre_nms_top_k)
    if (checkpoint is None) == (weights is None):
        raise SsdError("CHECKPOINT/--weights: give the checkpoint to export once (e.g. `ssd export-onnx best.pth`)")
    checkpoint = checkpoint or weights
    out = renamed("out", "old_output") or checkpoint.with_suffix(".onnx")
    check_output(out, "--out", force=force, inputs=[checkpoint], input_folders=[check_images])
    with reporting() as reporter:
        report = export_onnx(
            checkpoint, out, opset=opset, dynamic_batch=not static, half=half, nms=nms, postprocess=pp,
            check_images=check_images, force=force, reporter=reporter,
        )
    _print_report(report, pp, half=half, nms=nms)


def _print_report(report, pp, *, half: bool, nms: bool) -> None:
    table = Table(title=f"export-onnx: {escape(report.arch)}", show_header=False)
    table.add_row("written", f"{escape(str(report.output))} ({report.size_bytes / 1e6:.1f} MB)")
    if report.priors_path is not None:
        table.add_row("priors", escape(str(report.priors_path)))
    table.add_row(
        "opset / batch axis / dtype",
        f"{report.opset} / {'dynamic' if report.dynamic_batch else 'static (1)'} / {'float16' if half else 'float32'}",
    )
    if nms:
        table.add_row(
            "in-graph post-processing",
            f"conf {pp.score_threshold:g}, IoU {pp.nms_threshold:g}, max-det {pp.top_k}, pre-NMS {pp.pre_nms_top_k}",
        )
    else:
        table.add_row("outputs", "raw (decode + NMS by the runtime)")
    table.add_row("checked on", f"{escape(report.check_source)}, batch sizes {', '.join(map(str, report.batch_sizes))}")
    for name, diff in report.raw_diff.items():
        table.add_row(f"max |onnx - torch| {name}", f"{diff:.3g} (tolerance {report.raw_tol[name]:.3g})")
    if report.graph_vs_decode is not None:
        table.add_row("in-graph NMS vs PyTorch post-processing", report.graph_vs_decode.summary())
    if report.onnx_vs_torch is not None:
        table.add_row("detections onnx vs torch", report.onnx_vs_torch.summary())
    table.add_row("export time", f"{report.export_seconds:.1f} s")
    console.print(table)
    if half and report.onnx_vs_torch is not None and not report.onnx_vs_torch.equal:
        warn("float16 detections differ slightly from the float32 PyTorch model (expected with --half)")
