"""`ssd eval`: parse options, call :mod:`ssdcli.engine.evaluator`, print the per-class table and the means."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ssdcli.cli.console import console, warn
from ssdcli.cli.options import DeviceOption
from ssdcli.errors import SsdError


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def command(
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset folder (from `ssd prepare-voc`).")],
    weights: Annotated[Optional[str], typer.Option("--weights", "-w", help="Checkpoint (.pth) or exported model (.onnx).")] = None,
    detections: Annotated[Optional[Path], typer.Option("--detections", help="Evaluate this detection JSON file (`ssd detect --json` format) instead of a model.")] = None,
    split: Annotated[str, typer.Option(help="Split of the prepared dataset.")] = "test",
    metric: Annotated[str, typer.Option(help="voc07 (11-point), voc12 (all-points), coco; comma-separated, first is primary.")] = "voc07",
    conf: Annotated[float, typer.Option(help="Detector score threshold (SSD evaluation setting).")] = 0.01,
    nms: Annotated[float, typer.Option(help="NMS IoU threshold.")] = 0.45,
    top_k: Annotated[int, typer.Option("--top-k", help="Detections kept per image.")] = 200,
    batch: Annotated[int, typer.Option("--batch", help="Images per forward pass.")] = 8,
    workers: Annotated[int, typer.Option(help="Image decoding processes (0: in the main process).")] = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every number to this JSON file.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for precision-recall plots (PNG).")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Evaluate a model or a detection file on a prepared split with the exact VOC/COCO protocols."""
    from ssdcli.data.records import load_prepared
    from ssdcli.detections_io import read_detections
    from ssdcli.engine.evaluator import (
        METRIC_PROTOCOLS, check_class_names, detector_settings, evaluate_detections, load_detector, parse_metrics,
        run_detector,
    )
    from ssdcli.postprocess import PostprocessConfig

    metrics = parse_metrics(metric)
    if (weights is None) == (detections is None):
        raise SsdError("--weights/--detections: give exactly one (a model to run, or a detection file to score)")
    if not 0.0 <= conf < 1.0:
        raise SsdError(f"--conf {conf}: must be in [0, 1)")
    if not 0.0 < nms <= 1.0:
        raise SsdError(f"--nms {nms}: must be in (0, 1]")
    for name, v, lo in (("--top-k", top_k, 1), ("--batch", batch, 1), ("--workers", workers, 0)):
        if v < lo:
            raise SsdError(f"{name} {v}: must be at least {lo}")

    ds = load_prepared(data, splits=[split])
    records = ds.split(split)
    n_obj = sum(len(r.labels) for r in records)
    console.print(f"[bold]Data[/]: {escape(str(data))} split '{escape(split)}': {len(records)} images, {n_obj} objects, "
                  f"{len(ds.classes)} classes")
    settings: dict = {}
    if weights is not None:
        from ssdcli.device import resolve_device

        pp = PostprocessConfig(score_threshold=conf, nms_threshold=nms, top_k=top_k)
        detector = load_detector(weights, resolve_device(device), pp)
        check_class_names(detector.class_names, ds.classes, weights, str(data))
        settings = detector_settings(detector)
        console.print(
            f"[bold]Detector[/]: {escape(weights)} ({settings['arch']}, {settings['image_size']}x{settings['image_size']}, "
            f"{settings['backend']} on {settings['device']}): score >= {pp.score_threshold:g}, NMS IoU "
            f"{pp.nms_threshold:g}, top {pp.top_k} per image (pre-NMS top {pp.pre_nms_top_k} per class)"
        )
        with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task("eval", total=len(records))
            dets = run_detector(detector, records, batch_size=batch, workers=workers,
                                progress=lambda n: bar.advance(task, n))
        source = "model detections"
    else:
        dets = read_detections(detections)
        source = str(detections)
        console.print(f"[bold]Detections[/]: {escape(source)} ({len(dets)} entries; detector settings are whatever "
                      "produced them)")

    report = evaluate_detections(dets, records, ds.classes, metrics, source=source)
    report.settings = settings
    for m in metrics:
        console.print(f"[bold]Protocol {m}[/]: {METRIC_PROTOCOLS[m]}")
    for w in report.warnings:
        warn(escape(w))
    _print_table(report)

    if json_path is not None:
        from ssdcli.io_utils import atomic_write_text

        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=1) + "\n")
        console.print(f"results: {escape(str(json_path))}")
    if out is not None:
        from ssdcli.engine.evaluator import write_pr_plots

        for p in write_pr_plots(report, out):
            console.print(f"PR curves: {escape(str(p))}")


def _print_table(report) -> None:
    voc = [m for m in report.results if m.startswith("voc")]
    coco = report.results.get("coco")
    table = Table(title=f"AP per class ({len(report.class_names)} classes; gt: non-difficult objects, diff: difficult)")
    table.add_column("class")
    cols = ["gt", "diff", "dets"] + (["TP", "FP"] if voc else [])
    for col in cols:
        table.add_column(col, justify="right")
    for m in voc:
        table.add_column(f"AP {m}", justify="right")
    if coco is not None:
        table.add_column("AP coco", justify="right")
        table.add_column("AP50 coco", justify="right")
    counts = report.class_counts
    for k, name in enumerate(report.class_names):
        row = [escape(name), str(counts["gt"][k]), str(counts["difficult"][k]), str(counts["detections"][k])]
        if voc:
            c = report.results[voc[0]].classes[k]
            row += [str(c.tp), str(c.fp)]
        row += [_fmt(report.results[m].classes[k].ap) for m in voc]
        if coco is not None:
            row += [_fmt(coco.per_class_ap[k]), _fmt(coco.per_class_ap50[k])]
        table.add_row(*row)
    total = [str(sum(counts[k])) for k in ("gt", "difficult", "detections")]
    if voc:
        c0 = report.results[voc[0]].classes
        total += [str(sum(c.tp for c in c0)), str(sum(c.fp for c in c0))]
    mean_row = ["[bold]all[/]", *total] + [f"[bold]{_fmt(report.results[m].map)}[/]" for m in voc]
    if coco is not None:
        mean_row += [f"[bold]{_fmt(coco.stats['AP'])}[/]", f"[bold]{_fmt(coco.stats['AP50'])}[/]"]
    table.add_section()
    table.add_row(*mean_row)
    console.print(table)
    for m in voc:
        r = report.results[m]
        n_in = sum(c.ap is not None for c in r.classes)
        console.print(f"[bold]mAP {m}[/] = {_fmt(r.map)} (mean over the {n_in} classes with ground truth)")
    if coco is not None:
        s = coco.stats
        console.print("[bold]COCO[/] " + "  ".join(f"{k} {_fmt(s[k])}" for k in s))
