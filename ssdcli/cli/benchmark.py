"""`ssd benchmark`: parse options, call :func:`ssdcli.deploy.benchmark.run_benchmark`, print the tables."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ssdcli.cli.console import console
from ssdcli.cli.options import (
    ConfOption,
    DeviceOption,
    ForceOption,
    IouOption,
    MaxDetOption,
    OptionValueError,
    WeightsOption,
    comma_choices,
    postprocess_config,
    ranged_option,
)
from ssdcli.cli.progress import reporting
from ssdcli.errors import SsdError
from ssdcli.io_utils import check_output


def _ints(spec: str, option: str) -> list[int]:
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise SsdError(f"{option} {spec}: expected comma-separated integers, e.g. 1,8,32") from None


def _f(value: float | None, fmt: str | None = None) -> str:
    """Compact numbers for narrow terminals: 3 significant digits unless ``fmt`` is given."""
    if value is None:
        return "-"
    if fmt is not None:
        return format(value, fmt)
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


class Engine(str, enum.Enum):
    torch = "torch"
    compile = "compile"
    onnx = "onnx"
    tensorrt = "tensorrt"
    int8 = "int8"
    bf16 = "bf16"


def _batch_list(value: str) -> str:
    try:
        sizes = _ints(value, "--batch")
    except SsdError:
        sizes = []
    if not sizes or any(b < 1 for b in sizes):
        raise OptionValueError(f"{value}: expected comma-separated batch sizes >= 1, e.g. 1,8,32")
    return value


def command(
    weights: WeightsOption,
    batch: Annotated[str, typer.Option(
        "--batch", callback=_batch_list, help="Comma-separated batch sizes (each >= 1).")] = "1,8,32",
    engines: Annotated[str, typer.Option(
        "--engines", callback=comma_choices(Engine, "engine"),
        help="Comma-separated: torch, compile, onnx, tensorrt, int8 (ONNX int8: an int8 .onnx, or the .pth "
        "quantized on --calib-data), bf16 (PyTorch bfloat16 autocast on CPU).")] = "torch,compile,onnx,tensorrt",
    device: DeviceOption = "auto",
    half: Annotated[bool, typer.Option("--half", help="float16 (CUDA only).")] = False,
    iters: Annotated[int, ranged_option(
        "--iters", help="Timed iterations per engine and batch size.", lo=1)] = 10,
    warmup: Annotated[int, ranged_option("--warmup", help="Untimed iterations first.", lo=0)] = 3,
    conf: ConfOption = 0.01,
    iou: IouOption = None,
    max_det: MaxDetOption = 200,
    json_path: Annotated[Optional[Path], typer.Option(
        "--json", help="Write the full report (settings, versions, rows) as JSON.")] = None,
    force: ForceOption = False,
    accuracy: Annotated[bool, typer.Option(
        "--accuracy", help="Also measure VOC07 mAP@0.5 per engine (needs --data).")] = False,
    data: Annotated[Optional[Path], typer.Option(
        "--data", help="Prepared dataset for --accuracy (and its images for timing).")] = None,
    split: Annotated[str, typer.Option(help="Split of --data.")] = "test",
    images: Annotated[Optional[Path], typer.Option(
        "--images", help="Image file or folder to time on (default: synthetic JPEGs).")] = None,
    train: Annotated[bool, typer.Option(
        "--train", help="Also measure training-step throughput at each batch size.")] = False,
    calib_data: Annotated[Optional[Path], typer.Option(
        "--calib-data", help="Prepared dataset whose train split calibrates the int8 engine (default: --data).",
    )] = None,
) -> None:
    """Latency, throughput and where the time goes, per engine and batch size (plus FLOPs vs hardware peak)."""
    from ssdcli.deploy.benchmark import run_benchmark
    from ssdcli.io_utils import atomic_write_text

    pp = postprocess_config(conf, iou, max_det)
    if accuracy and data is None:
        raise SsdError("--accuracy: needs --data PREPARED (a folder written by `ssd prepare-voc`)")
    if data is not None and not accuracy:
        raise SsdError("--data: only used with --accuracy (time on your own pictures with --images DIR)")
    if json_path is not None:
        check_output(json_path, "--json", force=force, inputs=[weights], input_folders=[data, images])
    with reporting() as reporter:
        report = run_benchmark(
            weights, batches=_ints(batch, "--batch"), engines=engines.split(","), device=device, half=half,
            warmup=warmup, iters=iters, accuracy_data=data, train=train, images=images, split=split,
            postprocess=pp, calib_data=calib_data, reporter=reporter,
        )
    _print_report(report)
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2))
        console.print(f"report written to {escape(str(json_path))}")


def _print_report(report) -> None:
    env, model, peak = report.environment, report.model, report.peak
    console.print(
        f"[bold]{escape(model['arch'])}[/] {model['image_size']}px, {model['num_classes'] - 1} classes, "
        f"{model['parameters'] / 1e6:.1f} M parameters, {model['gflops_per_image']:.2f} GFLOPs/image | "
        f"[bold]{escape(env['device_name'])}[/] ({env['device']}), matmul peak {peak['gflops']:.0f} GFLOP/s "
        f"({peak['dtype']}, n={peak['size']}) | torch {env['versions']['torch']}, "
        f"onnxruntime {env['versions']['onnxruntime']}"
    )
    features = env.get("cpu_features", {})
    if env["device"] == "cpu" and features:
        have = ", ".join(features["flags"].values()) if features["known"] else "unknown (no /proc/cpuinfo)"
        console.print(f"CPU features for int8/bf16 kernels: {escape(have or 'none')}; PyTorch CPU kernels: "
                      f"{escape(str(features['torch_cpu_capability']))}")
    show_map = any(r.map is not None for r in report.rows)
    table = Table(title="benchmark (ms per batch, medians)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    cols = ["engine", "batch", "p50", "p90", "img/s", "pre", "forward", "post", "vs peak", "e2e/fwd"] + (
        ["mAP@0.5"] if show_map else []
    )
    for col in cols:
        table.add_column(
            col,
            justify="left" if col == "engine" else "right",
            no_wrap=True,
            min_width=max(len(col), 5 if col != "engine" else 8),
        )
    skipped = []
    for r in report.rows:
        if not r.ok:
            skipped.append(r)
            table.add_row(
                r.engine, "-" if r.batch is None else str(r.batch), "[yellow]skipped[/]", *[""] * (len(cols) - 3)
            )
            continue
        cells = [
            r.engine,
            str(r.batch),
            _f(r.latency_p50_ms),
            _f(r.latency_p90_ms),
            _f(r.throughput),
            _f(r.pre_ms),
            _f(r.forward_ms),
            _f(r.post_ms),
            f"{_f(r.peak_ratio)}x",
            _f(r.e2e_over_forward, ".2f"),
        ]
        table.add_row(*cells, *([_f(r.map, ".4f")] if show_map else []))
    console.print(table)
    for r in skipped:
        where = "" if r.batch is None else f" (batch {r.batch})"
        console.print(f"[yellow]{escape(r.engine)}{where} skipped:[/] {escape(r.reason)}")
    if report.train:
        tt = Table(title="training step (random data, SGD)", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("batch", "step ms", "img/s"):
            tt.add_column(col, justify="right", min_width=7)
        for t in report.train:
            tt.add_row(
                str(t.batch), *((_f(t.step_ms), _f(t.images_per_s)) if t.status == "ok" else ("[yellow]skipped[/]", ""))
            )
        console.print(tt)
        for t in report.train:
            if t.status != "ok":
                console.print(f"[yellow]training, batch {t.batch} skipped:[/] {escape(t.reason)}")
    console.print(
        "[dim]p50/p90: image files in, pixel boxes out; pre: decode + resize + normalise; post: decode + NMS "
        "+ boxes to pixels (in the graph for onnx/tensorrt: part of forward); vs peak: forward time / time of "
        "the model FLOPs at the measured matmul peak (1x = as fast as a dense matrix product; below 1x the "
        "convolution library uses fewer multiplies than the model's FLOPs, e.g. Winograd 3x3 kernels); "
        "e2e/fwd: p50 / forward[/]"
    )
    for note in report.notes:
        console.print(f"[dim]note: {escape(note)}[/]")
