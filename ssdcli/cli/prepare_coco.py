"""`ssd prepare-coco`: validate COCO instance JSON data and write a prepared index (options -> library call)."""

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
from ssdcli.data.coco_source import prepare_coco
from ssdcli.errors import SsdError

_SPEC = "JSON[:IMAGES] (images default: found beside the JSON: <name>/, images/<name>/, images/, its folder)."


def command(
    source: Annotated[
        Path | None,
        typer.Argument(help="A COCO JSON file, or a folder: annotations/instances_*.json + train2017/..., or "
                            "train/ valid/ test/ each with _annotations.coco.json, or one JSON."),
    ] = None,
    out: OutOption = None,
    train: Annotated[str | None, typer.Option("--train", help=f"Train split: {_SPEC}")] = None,
    val: Annotated[str | None, typer.Option("--val", help=f"Val split: {_SPEC}")] = None,
    test: Annotated[str | None, typer.Option("--test", help=f"Test split: {_SPEC}")] = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Comma-separated class names, or 'auto' (sorted names found). Default: the "
                                       "categories the annotations use, in category-id order."),
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
    """Validate COCO instance JSON (+ images) and write manifest.json + <split>.jsonl, as prepare-voc does."""
    if source is None and not (train or val or test):
        raise SsdError("give a COCO JSON or dataset folder, or --train/--val/--test JSON[:IMAGES]")
    root = source if source is not None else Path(str(train or val or test).split(":")[0])
    run_prepare(root, out, force, prepare_coco, source=source, train=train, val=val, test=test,
                classes=class_spec(classes, classes_file), verify_images=verify_images, strict=strict,
                workers=workers, val_fraction=val_fraction, split_seed=split_seed, split=split)  # fmt: skip
