"""`ssd train`: parse options, call :func:`ssdcli.engine.trainer.train`, print where everything went."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ssdcli.cli.console import console
from ssdcli.cli.options import DeviceOption
from ssdcli.errors import SsdError


def parse_duration(text: str | None) -> float | None:
    """``90``, ``90s``, ``15m``, ``1.5h`` -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not m:
        raise SsdError(f"--time-limit {text}: expected a duration like 900, 90s, 15m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def command(
    data: Annotated[Optional[str], typer.Option("--data", help="Prepared dataset folder (from `ssd prepare-voc`).")] = None,
    arch: Annotated[str, typer.Option(help="Architecture: ssd300, ssd300-bn, ssd512, ssd512-bn, ssdlite320, centernet-res18 ...")] = "ssd300",
    iters: Annotated[Optional[int], typer.Option(help="Training iterations (paper: 120000).")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Alternative to --iters.")] = None,
    batch: Annotated[int, typer.Option(help="Images per step (per GPU).")] = 32,
    lr: Annotated[Optional[float], typer.Option(help="Base lr (default 1e-3 x batch/32; biases get 2x).")] = None,
    momentum: Annotated[float, typer.Option()] = 0.9,
    weight_decay: Annotated[float, typer.Option()] = 5e-4,
    optimizer: Annotated[str, typer.Option(help="sgd or adamw.")] = "sgd",
    schedule: Annotated[str, typer.Option(help="step (x0.1 at 2/3 and 5/6 of the run) or cosine.")] = "step",
    warmup_iters: Annotated[Optional[int], typer.Option(help="Linear warm-up length (default min(500, 5% of run)).")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="Input size (default: the architecture's).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="DataLoader worker processes (default: 1 on CPU, min(8, CPUs) on CUDA).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    amp: Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="Mixed precision (default on for CUDA).")] = None,
    channels_last: Annotated[bool, typer.Option("--channels-last")] = False,
    zoom_out: Annotated[Optional[float], typer.Option(help="SSD zoom-out limit (default: the paper's 4; 1 turns it off, e.g. for large objects or small inputs).")] = None,
    augment: Annotated[str, typer.Option(help="fast (the model's own pipeline) or reference (SSD only: the same distribution composed plainly from torchvision.transforms.v2, several times slower).")] = "fast",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    grad_clip: Annotated[Optional[float], typer.Option(help="Clip the gradient norm.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Validate every N iterations (default: 4 times per run).")] = None,
    val_size: Annotated[Optional[int], typer.Option(help="Validate on a random subset of this many images.")] = None,
    val_split: Annotated[str, typer.Option()] = "test",
    val_metric: Annotated[str, typer.Option(help="voc07 or voc12.")] = "voc07",
    weights: Annotated[Optional[str], typer.Option(help="Fine-tune from a native checkpoint.")] = None,
    backbone_weights: Annotated[Optional[str], typer.Option(help="ImageNet backbone state dict file (torchvision format).")] = None,
    pretrained_backbone: Annotated[bool, typer.Option(help="Fetch torchvision's ImageNet backbone (needs internet).")] = False,
    resume: Annotated[Optional[str], typer.Option(help="Resume from runs/train/NAME/last.pth.")] = None,
    project: Annotated[str, typer.Option(help="Parent folder of run folders.")] = "runs/train",
    name: Annotated[str, typer.Option(help="Run name (auto-incremented if taken).")] = "exp",
    time_limit: Annotated[Optional[str], typer.Option(help="Stop after this long (e.g. 15m), then validate and save.")] = None,
    log_every: Annotated[int, typer.Option()] = 20,
    devices: Annotated[Optional[str], typer.Option(help="GPU ids (e.g. 0,1): launch one process per GPU with torchrun.")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Train a detector (defaults: the SSD paper's recipe)."""
    from ssdcli.cli.progress import TrainProgress
    from ssdcli.engine.distributed import launch_torchrun
    from ssdcli.engine.trainer import TrainOptions, train

    if devices:
        argv = _without_devices_flag(sys.argv[1:])
        raise typer.Exit(launch_torchrun(devices, argv))
    if not resume and not data:
        raise SsdError("--data PREPARED is required (or --resume runs/train/NAME/last.pth)")
    options = TrainOptions(
        data=str(Path(data).resolve()) if data else "", arch=arch, iters=iters, epochs=epochs, batch=batch, lr=lr,
        momentum=momentum, weight_decay=weight_decay, optimizer=optimizer, schedule=schedule, warmup_iters=warmup_iters,
        img_size=img_size, workers=workers, seed=seed, amp=amp, channels_last=channels_last, zoom_out=zoom_out, augment=augment,
        compile=compile,
        grad_clip=grad_clip, eval_every=eval_every, val_size=val_size, val_split=val_split, val_metric=val_metric,
        weights=weights, backbone_weights=backbone_weights, pretrained_backbone=pretrained_backbone, project=project,
        name=name, time_limit=parse_duration(time_limit), log_every=log_every, device=device,
    )
    result = train(options, resume=resume, report=lambda m: console.print(escape(m)), progress_factory=TrainProgress)
    table = Table(title=f"training {result.stopped}", show_header=False)
    table.add_row("iterations", f"{result.iteration} / {result.total_iters}")
    table.add_row("best val mAP", "-" if result.best_map is None else f"{result.best_map:.4f}")
    table.add_row("non-finite steps skipped", str(result.bad_steps))
    for f in ("last.pth", "best.pth", "metrics.jsonl", "loss.png", "map.png", "options.json"):
        if (result.run_dir / f).exists():
            table.add_row(f, str(result.run_dir / f))
    console.print(table)


def _without_devices_flag(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--devices":
            skip = True
            continue
        if a.startswith("--devices="):
            continue
        out.append(a)
    return out
