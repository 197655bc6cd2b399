"""`ssd detect`: parse options, call :func:`ssdcli.engine.detect.run_detect`, print a summary table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ssdcli.cli.console import console, warn
from ssdcli.cli.options import DeviceOption


def command(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns (quote them: 'imgs/*.png').", show_default=False)],
    weights: Annotated[str, typer.Option("--weights", "-w", help="Native checkpoint (.pth) or exported model (.onnx).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the pictures (input names kept; never an input folder).")] = None,
    conf: Annotated[float, typer.Option(help="Display threshold: boxes drawn, written by --save-txt and counted.")] = 0.5,
    classes: Annotated[Optional[str], typer.Option(help="Keep only these classes (comma-separated names); also applies to --json.")] = None,
    max_det: Annotated[int, typer.Option("--max-det", help="At most this many boxes drawn per image.")] = 100,
    batch: Annotated[int, typer.Option("--batch", help="Images per forward pass.")] = 8,
    half: Annotated[bool, typer.Option("--half", help="float16 inference (CUDA, PyTorch checkpoints only).")] = False,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include images in subfolders of input folders.")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write all detections >= --score in the `ssd eval --detections` format.")] = None,
    save_txt: Annotated[bool, typer.Option("--save-txt", help="Also write OUT/<name>.txt: 'label score xmin ymin xmax ymax' per box >= --conf.")] = False,
    nms: Annotated[float, typer.Option(help="NMS IoU threshold.")] = 0.45,
    score: Annotated[float, typer.Option(help="Detector score threshold (what --json keeps; 0.01 = evaluation setting).")] = 0.01,
    device: DeviceOption = "auto",
) -> None:
    """Detect objects in images; boxes are in original-image pixels (VOC convention, 1-based inclusive)."""
    from ssdcli.cli.progress import task_progress
    from ssdcli.device import resolve_device
    from ssdcli.engine.detect import detect_postprocess, run_detect
    from ssdcli.predictor import Detector

    dev = resolve_device(device)
    if half and dev.type != "cuda":
        warn("--half: ignored on CPU (float16 is used on CUDA only)")
    if out is None and json_path is None and not save_txt:
        warn("nothing is saved: give --out for pictures and/or --json for the detections")
    postprocess = detect_postprocess(score=score, nms=nms, max_det=max_det)
    detector = Detector.from_checkpoint(weights, dev, postprocess, half=half)
    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None

    bar = task_progress()
    task = bar.add_task("detect", total=None, rate="")
    started = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        if done == 0:  # inputs and outputs checked: show the bar (and time the images) from now on
            started[0] = time.perf_counter()
            bar.start()
        elapsed = time.perf_counter() - started[0]
        bar.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f} img/s" if done and elapsed > 0 else "")

    try:
        summary = run_detect(
            detector, inputs, out, recursive=recursive, batch_size=batch, conf=conf, classes=wanted, max_det=max_det,
            json_path=json_path, save_txt=save_txt, progress=progress, warn=lambda m: warn(escape(m)),
        )
    finally:
        if bar.live.is_started:
            bar.stop()

    table = Table(title="detect", show_header=False)
    table.add_row("images processed", str(summary.processed))
    table.add_row("skipped (unreadable)", str(len(summary.skipped)))
    if summary.ignored:
        table.add_row("ignored (not an image name)", str(summary.ignored))
    if summary.downscaled:
        table.add_row("pictures downscaled for drawing", str(summary.downscaled))
    table.add_row("speed", f"{summary.images_per_s:.1f} img/s ({summary.seconds:.1f} s)")
    shown = {k: v for k, v in summary.per_class.items() if v}
    if not shown:
        table.add_row(f"detections >= {conf:g}", "none")
    for name, count in shown.items():
        table.add_row(f"detections >= {conf:g}: {escape(name)}", str(count))
    if out is not None:
        table.add_row("pictures" + (" + txt" if save_txt else ""), escape(str(out)))
    if json_path is not None:
        table.add_row(f"json ({summary.json_detections} detections >= {score:g})", escape(str(json_path)))
    console.print(table)
