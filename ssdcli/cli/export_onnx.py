"""`ssd export-onnx`: parse options, call :func:`ssdcli.deploy.onnx_export.export_onnx`, print the check table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ssdcli.cli.console import console, warn
from ssdcli.deploy.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET


def command(
    checkpoint: Annotated[Path, typer.Argument(help="Native checkpoint (.pth) to export.", show_default=False)],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="ONNX file to write (default: CHECKPOINT with .onnx).")
    ] = None,
    opset: Annotated[int, typer.Option(help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}).")] = DEFAULT_OPSET,
    static: Annotated[
        bool, typer.Option("--static", help="Fixed batch size 1 instead of a dynamic batch axis.")
    ] = False,
    half: Annotated[
        bool, typer.Option("--half", help="float16 weights and input (post-processing stays float32).")
    ] = False,
    nms: Annotated[
        bool, typer.Option("--nms/--no-nms", help="Decode + NMS inside the graph, or raw outputs + a .priors.npy file.")
    ] = True,
    check_images: Annotated[
        Optional[Path],
        typer.Option(
            "--check-images",
            help="Image file or folder for the ONNX Runtime vs PyTorch check (default: synthetic images).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    conf: Annotated[
        float, typer.Option(help="Score threshold baked into the graph (0.01 = evaluation setting).")
    ] = 0.01,
    nms_iou: Annotated[float, typer.Option("--nms-iou", help="NMS IoU threshold baked into the graph.")] = 0.45,
    top_k: Annotated[int, typer.Option("--top-k", help="Detections kept per image (output slots).")] = 200,
    pre_nms_top_k: Annotated[int, typer.Option("--pre-nms-top-k", help="Candidates per class before NMS.")] = 400,
) -> None:
    """Export a checkpoint to ONNX and check it against PyTorch with ONNX Runtime before writing it."""
    from ssdcli.deploy.onnx_export import export_onnx
    from ssdcli.postprocess import PostprocessConfig

    pp = PostprocessConfig(score_threshold=conf, nms_threshold=nms_iou, top_k=top_k, pre_nms_top_k=pre_nms_top_k)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("export", total=None)
        report = export_onnx(
            checkpoint,
            output,
            opset=opset,
            dynamic_batch=not static,
            half=half,
            nms=nms,
            postprocess=pp,
            check_images=check_images,
            force=force,
            progress=lambda m: bar.update(task, description=escape(m)),
        )

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
            f"conf {pp.score_threshold:g}, NMS IoU {pp.nms_threshold:g}, top-k {pp.top_k}, pre-NMS {pp.pre_nms_top_k}",
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
