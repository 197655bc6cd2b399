"""`ssd eval`: parse options, call :mod:`ssdcli.engine.evaluator`, print the per-class table and the means."""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ssdcli.cli.console import console, warn
from ssdcli.cli.options import (
    BatchOption,
    ConfOption,
    DeviceOption,
    FlipTestOption,
    ForceOption,
    IouOption,
    MaxDetOption,
    OldNmsOption,
    OldScoreOption,
    OldTopKOption,
    OptionalWeightsOption,
    TestScalesOption,
    WorkersOption,
    comma_choices,
    parse_test_scales,
    postprocess_config,
    ranged_option,
    renamed,
)
from ssdcli.cli.progress import reporting
from ssdcli.errors import SsdError
from ssdcli.io_utils import check_output


class Metric(str, enum.Enum):
    voc07 = "voc07"
    voc12 = "voc12"
    coco = "coco"


def _fmt(v: float | None) -> str:
    """Every AP and mAP as a fraction 0-1 with 4 decimals (as `ssd train` prints it)."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


MetricOption = Annotated[
    str,
    typer.Option(
        "--metric", callback=comma_choices(Metric, "metric"),
        help="Comma-separated, first is primary: voc07 (11-point), voc12 (all-points), coco (AP@[.5:.95] and "
             "AP75, which show loose boxes).",
    ),
]


def command(
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset folder (from `ssd prepare-voc`).",
                                       show_default=False)],
    weights: OptionalWeightsOption = None,
    detections: Annotated[Optional[Path], typer.Option(
        "--detections", help="Score this detection JSON file (`ssd detect --json`) instead of a model.")] = None,
    split: Annotated[str, typer.Option(help="Split of the prepared dataset.")] = "test",
    metric: MetricOption = "voc07,coco",
    conf: ConfOption = 0.01,
    iou: IouOption = None,
    max_det: MaxDetOption = 200,
    batch: BatchOption = 8,
    workers: WorkersOption = 0,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write every number to this JSON file.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for precision-recall plots (PNG).")] = None,
    matrix_conf: Annotated[float, ranged_option(
        "--matrix-conf", help="Score threshold of the confusion matrix (IoU 0.5; --out picture, --json).",
        lo=0.0, hi=1.0)] = 0.25,
    force: ForceOption = False,
    device: DeviceOption = "auto",
    flip_test: FlipTestOption = False,
    test_scales: TestScalesOption = None,
    old_score: OldScoreOption = None,
    old_nms: OldNmsOption = None,
    old_top_k: OldTopKOption = None,
) -> None:
    """Evaluate a model or a detection file on a prepared split with the exact VOC/COCO protocols."""
    from ssdcli.engine.evaluator import parse_metrics
    from ssdcli.postprocess import PostprocessConfig

    metrics = parse_metrics(metric)
    pp: PostprocessConfig = postprocess_config(renamed("conf", "old_score"), renamed("iou", "old_nms"),
                                               renamed("max_det", "old_top_k"))
    if (weights is None) == (detections is None):
        raise SsdError("--weights/--detections: give exactly one (a model to run, or a detection file to score)")
    _check_outputs(json_path, out, metrics, force, inputs=[weights, detections], data=data)
    if detections is not None and (flip_test or test_scales):
        raise SsdError("--flip-test/--test-scales: they change how a model runs; --detections scores a file")
    dets, source, settings, records, classes = _detections(data, split, weights, detections, pp, device, batch, workers,
                                                           flip_test, parse_test_scales(test_scales))
    _report(dets, records, classes, metrics, source, settings, json_path, out, matrix_conf)


def _check_outputs(json_path: Path | None, out: Path | None, metrics: tuple[str, ...], force: bool,
                   inputs: list, data: Path) -> None:
    """Before any work: the JSON and the plots never replace an input, nor an existing file without --force."""
    if json_path is not None:
        check_output(json_path, "--json", force=force, inputs=inputs, input_folders=[data])
    if out is not None:
        if out.exists() and not out.is_dir():
            raise SsdError(f"--out {out}: is a file; give a folder for the plots")
        for m in metrics:
            check_output(out / f"pr_{m}.png", "--out", force=force, inputs=inputs, input_folders=[data])
        check_output(out / "confusion_matrix.png", "--out", force=force, inputs=inputs, input_folders=[data])


def _detections(data, split, weights, detections, pp, device, batch, workers, flip_test=False, test_scales=None):
    """Load the split, then run the model on it or read the detection file."""
    from ssdcli.data.records import load_prepared
    from ssdcli.detections_io import read_detections
    from ssdcli.engine.evaluator import check_class_names, detector_settings, load_detector, run_detector

    ds = load_prepared(data, splits=[split])
    records = ds.split(split)
    n_obj = sum(len(r.labels) for r in records)
    console.print(f"[bold]Data[/]: {escape(str(data))} split '{escape(split)}': {len(records)} images, "
                  f"{n_obj} objects, {len(ds.classes)} classes")
    if weights is None:
        dets = read_detections(detections)
        console.print(f"[bold]Detections[/]: {escape(str(detections))} ({len(dets)} entries; detector settings are "
                      "whatever produced them)")
        return dets, str(detections), {}, records, ds.classes
    from ssdcli.device import resolve_device

    detector = load_detector(weights, resolve_device(device), pp, flip_test=flip_test, test_scales=test_scales)
    check_class_names(detector.class_names, ds.classes, weights, str(data))
    settings = detector_settings(detector)
    pp = detector.postprocess  # with the model's own NMS IoU threshold when --iou was not given
    console.print(
        f"[bold]Detector[/]: {escape(weights)} ({settings['arch']}, {settings['image_size']}x{settings['image_size']}, "
        f"{settings['backend']} on {settings['device']}): score >= {pp.score_threshold:g}, NMS IoU "
        f"{pp.nms_threshold:g}, top {pp.top_k} per image (pre-NMS top {pp.pre_nms_top_k} per class)"
        + (", flip test" if settings["flip_test"] else "")
        + (f", scales {','.join(f'{s:g}' for s in settings['test_scales'])}" if settings["test_scales"] else "")
    )
    with reporting() as reporter:
        dets = run_detector(detector, records, batch_size=batch, workers=workers, reporter=reporter)
    return dets, "model detections", settings, records, ds.classes


def _report(dets, records, classes, metrics, source, settings, json_path, out, matrix_conf: float = 0.25) -> None:
    """Score the detections, print the protocols, warnings and tables, write the JSON and the plots."""
    from ssdcli.engine.evaluator import METRIC_PROTOCOLS, evaluate_detections, write_confusion_plot, write_pr_plots
    from ssdcli.io_utils import atomic_write_text

    report = evaluate_detections(dets, records, classes, metrics, source=source, confusion_score=matrix_conf)
    report.settings = settings
    for m in metrics:
        console.print(f"[bold]Protocol {m}[/]: {METRIC_PROTOCOLS[m]}")
    for w in report.warnings:
        warn(escape(w))
    _print_table(report)
    cm = report.confusion
    console.print(f"[bold]Confusion matrix[/] (IoU >= {cm.iou_threshold:g}, score >= {cm.score_threshold:g}): "
                  f"{cm.correct} correct, {cm.confused} wrong class, {cm.missed} missed, "
                  f"{cm.false_positives} false positives, {cm.ignored} on difficult objects ignored")
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=1) + "\n")
        console.print(f"results: {escape(str(json_path))}")
    if out is not None:
        for p in write_pr_plots(report, out):
            console.print(f"PR curves: {escape(str(p))}")
        console.print(f"confusion matrix: {escape(str(write_confusion_plot(report, out)))}")


def _print_table(report) -> None:
    voc = [m for m in report.results if m.startswith("voc")]
    coco = report.results.get("coco")
    table = Table(title=f"AP per class, 0-1 ({len(report.class_names)} classes; gt: non-difficult objects, "
                        "diff: difficult)")
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
        console.print(f"[bold]mAP@0.5 ({m})[/] = {_fmt(r.map)} (mean over the {n_in} classes with ground truth)")
    if coco is not None:
        s = coco.stats
        console.print("[bold]COCO[/] " + "  ".join(f"{k} {_fmt(s[k])}" for k in s))
