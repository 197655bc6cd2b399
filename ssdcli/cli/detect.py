"""`ssd detect`: parse options, call :func:`ssdcli.engine.detect.run_detect`, print a summary table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

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
    NameOption,
    OldNmsOption,
    OldScoreOption,
    PretrainedWeightsOption,
    ProjectOption,
    TestScalesOption,
    given,
    parse_test_scales,
    postprocess_config,
    ranged_option,
    renamed,
)
from ssdcli.cli.progress import reporting
from ssdcli.engine.interrupts import signal_name
from ssdcli.engine.runs import check_run_name, next_run_dir
from ssdcli.io_utils import check_output

if TYPE_CHECKING:
    from ssdcli.engine.detect import DetectSummary
    from ssdcli.engine.detect_video import VideoRun


ShowConfOption = Annotated[
    Optional[float],
    ranged_option("--show-conf", help="Drawing threshold: boxes drawn, written by --save-txt and counted "
                  "(default 0.5; --conf when only --conf is given).", lo=0.0, hi=1.0),
]


def command(
    inputs: Annotated[list[str], typer.Argument(
        help="Image or video files, folders, glob patterns (quote them: 'imgs/*.png'), camera indices (0) or "
        "stream URLs (rtsp://, http(s)://).", show_default=False)],
    weights: PretrainedWeightsOption,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for the pictures (default: a new PROJECT/NAME folder unless only --json is "
        "asked for; never an input folder).")] = None,
    project: ProjectOption = "runs/detect",
    name: NameOption = "exp",
    conf: ConfOption = 0.01,
    iou: IouOption = None,
    max_det: MaxDetOption = 200,
    show_conf: ShowConfOption = None,
    classes: Annotated[Optional[str], typer.Option(
        help="Keep only these classes (comma-separated names); also applies to --json.")] = None,
    batch: BatchOption = 8,
    half: Annotated[bool, typer.Option("--half", help="float16 on CUDA, bfloat16 autocast on CPUs with native bf16 "
                                        "(PyTorch checkpoints only).")] = False,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Include images in subfolders of input folders.")] = False,
    json_path: Annotated[Optional[Path], typer.Option(
        "--json", help="Write every detection >= --conf in the `ssd eval --detections` format.")] = None,
    save_txt: Annotated[bool, typer.Option(
        "--save-txt", help="Also write OUT/<name>.txt: 'label score xmin ymin xmax ymax' per box >= --show-conf.")
    ] = False,
    force: ForceOption = False,
    device: DeviceOption = "auto",
    flip_test: FlipTestOption = False,
    test_scales: TestScalesOption = None,
    old_score: OldScoreOption = None,
    old_nms: OldNmsOption = None,
    vid_stride: Annotated[int, ranged_option(
        "--vid-stride", help="Videos and streams: detect on every Nth frame (the video is written at fps/N).", lo=1)
    ] = 1,
) -> None:
    """Detect objects in images, videos and streams; boxes are in original-image pixels (VOC convention, 1-based
    inclusive). Videos: OUT/NAME.mp4 (annotated) + OUT/NAME.jsonl (per-frame detections)."""
    from ssdcli.convert.pretrained import resolve_weights
    from ssdcli.device import resolve_device
    from ssdcli.inference import Detector

    postprocess = postprocess_config(renamed("conf", "old_score"), renamed("iou", "old_nms"), max_det)
    shown = _drawing_threshold(postprocess.score_threshold, show_conf, json_path)
    check_run_name(name)
    weights = resolve_weights(weights, lambda line: console.print(escape(line), soft_wrap=True))  # coco-<arch>
    if json_path is not None:
        check_output(json_path, "--json", force=force, inputs=[weights])
    dev = resolve_device(device)
    detector = Detector.from_checkpoint(weights, dev, postprocess, half=half, flip_test=flip_test,
                                        test_scales=parse_test_scales(test_scales))
    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    if out is None and (json_path is None or given("project") or given("name")):
        out = next_run_dir(project, name)  # like `ssd train`: runs/detect/exp, exp2, ... (created by run_detect)
    summary = _run(detector, inputs, out, recursive=recursive, batch_size=batch, conf=shown, classes=wanted,
                   max_det=max_det, json_path=json_path, save_txt=save_txt, force=force, protected=[weights],
                   vid_stride=vid_stride)
    _print_summary(summary, shown, postprocess.score_threshold, out, json_path, save_txt)
    if summary.videos is not None and summary.videos.stopped_by is not None:
        raise typer.Exit(code=128 + summary.videos.stopped_by)  # 130 after Ctrl-C, like `ssd train`


def _drawing_threshold(conf: float, show_conf: float | None, json_path: Path | None) -> float:
    """``--show-conf``, else ``--conf`` when it was given (its meaning in ssdcli 0.1: the drawing threshold),
    else 0.5."""
    if show_conf is not None:
        return show_conf
    if not given("conf"):  # (the old --score kept its meaning: the drawing threshold stays 0.5 with it)
        return 0.5
    if json_path is not None:
        warn(f"--conf {conf:g} is the detector's score threshold (it also filters --json); the drawing threshold "
             "is --show-conf")
    return conf


def _run(detector, inputs: list[str], out: Path | None, **kwargs) -> DetectSummary:
    """:func:`run_detect` with a progress bar that appears once inputs and outputs are checked."""
    from ssdcli.engine.detect import run_detect

    with reporting() as reporter:
        return run_detect(detector, inputs, out, reporter=reporter, warn=lambda m: warn(escape(m)), **kwargs)


def _print_summary(summary: DetectSummary, shown: float, score: float, out: Path | None, json_path: Path | None,
                   save_txt: bool) -> None:
    table = Table(title="detect", show_header=False)
    images = summary.videos is None or summary.processed or summary.skipped  # image rows: not for videos alone
    if images:
        table.add_row("images processed", str(summary.processed))
        table.add_row("skipped (unreadable)", str(len(summary.skipped)))
    if summary.ignored:
        table.add_row("ignored (not an image name)", str(summary.ignored))
    if summary.downscaled:
        table.add_row("pictures downscaled for drawing", str(summary.downscaled))
    if images:
        table.add_row("speed", f"{summary.images_per_s:.1f} img/s ({summary.seconds:.1f} s)")
    if summary.videos is not None:
        _video_rows(table, summary.videos)
    counted = {k: v for k, v in summary.per_class.items() if v}
    if not counted:
        table.add_row(f"detections >= {shown:g}", "none")
    for name, count in counted.items():
        table.add_row(f"detections >= {shown:g}: {escape(name)}", str(count))
    if out is not None and images:
        table.add_row("pictures" + (" + txt" if save_txt else ""), escape(str(out)))
    if json_path is not None:
        table.add_row(f"json ({summary.json_detections} detections >= {score:g})", escape(str(json_path)))
    console.print(table)


def _video_rows(table: Table, run: VideoRun) -> None:
    table.add_row("video frames processed", str(run.frames))
    for r in run.results:
        note = f" (ended early: {r.problem})" if r.problem else ""
        table.add_row(f"video {escape(r.source)}", f"{r.frames} frames, {r.frames_per_s:.1f} frame/s -> "
                      f"{escape(str(r.video))} + .jsonl{escape(note)}")
    if run.skipped:
        table.add_row("videos/streams skipped (cannot open)", str(len(run.skipped)))
    if run.stopped_by is not None:
        table.add_row("stopped by", signal_name(run.stopped_by))
