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
from ssdcli.deploy.quantize import DEFAULT_CALIB_IMAGES, CalibMethod, QuantizeSpec
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
    int8: Annotated[bool, typer.Option(
        "--int8", help="Static INT8 quantization (QDQ, per-channel weights) calibrated on --calib-data; box "
        "decoding and NMS stay float.")] = False,
    calib_data: Annotated[Optional[Path], typer.Option(
        "--calib-data", help="Prepared dataset for --int8: calibrates on its train split; its test split (if any) "
        "is used for the check and the mAP change.")] = None,
    calib_images: Annotated[int, ranged_option(
        "--calib-images", help="Training images used for calibration.", lo=1)] = DEFAULT_CALIB_IMAGES,
    calib_method: Annotated[CalibMethod, typer.Option(
        "--calib-method", help="How activation ranges are chosen from the calibration images.")] = CalibMethod.minmax,
    force: ForceOption = False,
    conf: ConfOption = 0.01,
    iou: IouOption = None,
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
    if int8 != (calib_data is not None):
        raise SsdError("--int8 needs --calib-data PREPARED (and --calib-data is only used with --int8)")
    spec = QuantizeSpec(calib_data, calib_images, calib_method) if calib_data is not None else None
    out = renamed("out", "old_output") or checkpoint.with_suffix(".onnx")
    check_output(out, "--out", force=force, inputs=[checkpoint], input_folders=[check_images])
    with reporting() as reporter:
        report = export_onnx(
            checkpoint, out, opset=opset, dynamic_batch=not static, half=half, nms=nms, postprocess=pp,
            check_images=check_images, force=force, int8=spec, reporter=reporter,
        )
    _print_report(report)


def _print_report(report) -> None:
    half, nms, pp = report.half, report.nms, report.postprocess  # with the model's own NMS IoU unless --iou
    table = Table(title=f"export-onnx: {escape(report.arch)}", show_header=False)
    table.add_row("written", f"{escape(str(report.output))} ({report.size_bytes / 1e6:.1f} MB)")
    if report.priors_path is not None:
        table.add_row("priors", escape(str(report.priors_path)))
    table.add_row(
        "opset / batch axis / dtype",
        f"{report.opset} / {'dynamic' if report.dynamic_batch else 'static (1)'} / "
        f"{'float16' if half else 'int8 (QDQ), float32 input' if report.int8 else 'float32'}",
    )
    if report.int8:
        cal = report.int8["calibration"]
        table.add_row("int8 calibration", f"{cal['method']} on {cal['images']} {cal['split']} images of "
                      f"{escape(str(cal['dataset']))}")
        table.add_row("kept float", f"{report.int8['float_parts']} (network op types left float: "
                      f"{', '.join(report.int8_float_ops)})")
    if nms:
        table.add_row(
            "in-graph post-processing",
            f"conf {pp.score_threshold:g}, IoU {pp.nms_threshold:g}, max-det {pp.top_k}, pre-NMS {pp.pre_nms_top_k}",
        )
    else:
        table.add_row("outputs", "raw (decode + NMS by the runtime)")
    table.add_row("checked on", f"{escape(report.check_source)}, batch sizes {', '.join(map(str, report.batch_sizes))}")
    for name, diff in report.raw_diff.items():
        limit = "not checked for int8" if report.int8 else f"tolerance {report.raw_tol[name]:.3g}"
        table.add_row(f"max |onnx - torch| {name}", f"{diff:.3g} ({limit})")
    if report.graph_vs_decode is not None:
        table.add_row("in-graph NMS vs PyTorch post-processing", report.graph_vs_decode.summary())
    if report.onnx_vs_torch is not None and report.int8_check is None:
        table.add_row("detections onnx vs torch", report.onnx_vs_torch.summary())
    if report.int8_check is not None:
        table.add_row("int8 vs float detections", report.int8_check.summary())
    if report.map_split:
        change = "-" if report.map_float is None or report.map_int8 is None else \
            f"{100 * (report.map_int8 - report.map_float):+.2f} points"
        table.add_row(
            f"mAP@0.5 on {report.map_images} {report.map_split} images",
            f"float {_pct(report.map_float)} -> int8 {_pct(report.map_int8)} ({change})",
        )
    table.add_row("export time", f"{report.export_seconds:.1f} s")
    console.print(table)
    if report.map_float is not None and report.map_int8 is not None and report.map_int8 < report.map_float - 0.01:
        warn(f"int8 loses {100 * (report.map_float - report.map_int8):.2f} points of mAP@0.5 on the test split (more "
             "than 1 point): try --calib-method, more --calib-images, or keep this model in float32")
    if half and report.onnx_vs_torch is not None and not report.onnx_vs_torch.equal:
        warn("float16 detections differ slightly from the float32 PyTorch model (expected with --half)")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"
