"""`ssd quickstart`: the whole dataset-to-deployment path on built-in sample data, no downloads."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from ssdcli.cli.console import console
from ssdcli.cli.options import DeviceOption
from ssdcli.errors import SsdError


def command(
    dir: Annotated[Path, typer.Option("--dir", help="Folder for every output (created).")] = Path("ssd-quickstart"),
    iters: Annotated[int, typer.Option(help="Training iterations (0: the built-in recipe's 2200).")] = 0,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes.")] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace the outputs of an earlier quickstart in --dir.")] = False,
    device: DeviceOption = "auto",
) -> None:
    """Generate sample data, then prepare-voc, train, eval, detect, export-onnx and benchmark it."""
    from ssdcli.cli.main import app
    from ssdcli.data.samples import write_sample_dataset
    from ssdcli.engine.quickstart import QUICKSTART_ITERS, clear_previous_outputs, quickstart_plan

    if iters < 0:
        raise SsdError(f"--iters {iters}: must be positive (0 picks the built-in recipe)")
    plan = quickstart_plan(dir.resolve(), device=device, iters=iters or QUICKSTART_ITERS, workers=workers)
    clear_previous_outputs(plan, force)
    started = time.monotonic()
    console.rule("[bold]1. sample data")
    write_sample_dataset(plan.sample_voc)
    console.print(f"wrote a VOC-layout sample dataset to {escape(str(plan.sample_voc))}")
    for i, step in enumerate(plan.steps, start=2):
        console.rule(f"[bold]{i}. {step.title}")
        console.print(f"[dim]$ {escape(step.shell())}[/]")
        code = app(args=step.argv, standalone_mode=False)
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
