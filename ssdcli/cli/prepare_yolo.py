"""`ssd prepare-yolo`: validate a YOLO dataset (data.yaml or images/ + labels/) and write a prepared index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ssdcli.cli.prepare_common import (
    ClassesFileOption,
    ForceOption,
    OutOption,
    SplitOption,
    SplitSeedOption,
    StrictOption,
    ValFractionOption,
    VerifyImagesOption,
    WorkersOption,
    class_spec,
    run_prepare,
)  # fmt: skip
from ssdcli.data.yolo_source import prepare_yolo


def command(
    source: Annotated[
        Path,
        typer.Argument(help="A YOLO data.yaml, or a folder holding one, or a folder with images/ and labels/ "
                            "(and classes.txt, or --classes)."),
    ],
    out: OutOption = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Comma-separated class names (a subset or another order of the names), or "
                                       "'auto' (sorted names found). Default: the data.yaml names in id order."),
    ] = None,
    classes_file: ClassesFileOption = None,
    verify_images: VerifyImagesOption = False,
    strict: StrictOption = False,
    workers: WorkersOption = None,
    val_fraction: ValFractionOption = 0.1,
    split_seed: SplitSeedOption = 0,
    split: SplitOption = None,
    force: ForceOption = False,
) -> None:
    """Validate a YOLO dataset and write manifest.json + <split>.jsonl, as prepare-voc does."""
    root = source.parent if source.is_file() else source
    run_prepare(root, out if out is not None else Path("prepared") / (root.resolve().name or "dataset"), force,
                prepare_yolo, source=source, classes=class_spec(classes, classes_file), verify_images=verify_images,
                strict=strict, workers=workers, val_fraction=val_fraction, split_seed=split_seed,
                split=split)  # fmt: skip
