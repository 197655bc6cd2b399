"""`ssd quickstart`: the whole dataset-to-deployment path on built-in sample data, no downloads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from ssdcli.cli.console import console
from ssdcli.cli.options import DeviceOption, OldDirOption, get_current_context, ranged_option, renamed
from ssdcli.cli.progress import reporting
from ssdcli.errors import SsdError


def command(
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for every output (created; default: ssd-quickstart).")] = None,
    iters: Annotated[int, ranged_option(
        "--iters", help="Training iterations (0: the built-in recipe's length).", lo=0)] = 0,
    workers: Annotated[int, ranged_option("--workers", help="Data-loading worker processes.", lo=0)] = 1,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace what an earlier quickstart wrote in --out (only that: it keeps a list).")] = False,
    device: DeviceOption = "auto",
    old_dir: OldDirOption = None,
) -> None:
    """Generate sample data, then prepare-voc, train, eval, detect, export-onnx and benchmark it."""
    from ssdcli.data.samples import write_sample_dataset
    from ssdcli.device import resolve_device
    from ssdcli.engine.quickstart import clear_previous_outputs, quickstart_plan, write_marker

    root = renamed("out", "old_dir") or Path("ssd-quickstart")
    resolve_device(device)  # every option is checked before anything is removed or written
    if root.exists() and not root.is_dir():
        raise SsdError(f"--out {root}: is a file; give a folder")
    plan = quickstart_plan(root.resolve(), device=device, iters=iters, workers=workers)
    for path in clear_previous_outputs(plan, force):
        console.print(f"[dim]removed {escape(str(path))} (an earlier quickstart's output)[/]")
    write_marker(plan)
    started = time.monotonic()
    console.rule("[bold]1. sample data")
    with reporting() as reporter:
        write_sample_dataset(plan.sample_voc, num_val=50, reporter=reporter)  # own val: all 300 train
    console.print(f"wrote a VOC-layout sample dataset to {escape(str(plan.sample_voc))}")
    ssd = get_current_context().find_root().command  # the `ssd` app itself: each step is a real command
    for i, step in enumerate(plan.steps, start=2):
        console.rule(f"[bold]{i}. {step.title}")
        console.print(f"[dim]$ {escape(step.shell())}[/]")
        code = ssd.main(args=step.argv, prog_name="ssd", standalone_mode=False)
        if code not in (None, 0):
            raise SsdError(f"quickstart stopped: step '{step.title}' failed (exit code {code})")
    minutes = (time.monotonic() - started) / 60
    _summary(plan, minutes)


def _summary(plan, minutes: float) -> None:
    result = json.loads(plan.eval_json.read_text()) if plan.eval_json.exists() else {}
    table = Table(title=f"quickstart finished in {minutes:.1f} min", show_header=False)
    if result.get("map") is not None:
        table.add_row("test mAP@0.5 (VOC07 11-point)", f"{result['map']:.4f}")
    rows = [
        ("sample dataset (VOC layout)", plan.sample_voc),
        ("prepared dataset", plan.prepared),
        ("training run (weights, log, curves)", plan.run_dir),
        ("evaluation (JSON, PR curves)", plan.eval_json.parent),
        ("pictures with detections", plan.root / "detections"),
        ("ONNX model", plan.onnx),
        ("benchmark (JSON)", plan.root / "benchmark.json"),
    ]
    for name, path in rows:
        table.add_row(name, escape(str(path)))
    console.print(table)
    commands = "\n".join(escape(s.shell()) for s in plan.steps)
    console.print(Panel(commands, title="the same steps, one by one (replace the sample paths with your data)"))
