"""`ssd prepare-voc`: validate a VOC-format dataset and write a prepared index (options -> library call)."""

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
    print_report,
    run_prepare,
)  # fmt: skip
from ssdcli.data.prepare import prepare_voc

__all__ = ["command", "print_report"]


def command(
    root: Annotated[
        Path, typer.Argument(help="A VOCdevkit folder (VOC2007/, VOC2012/ inside) or one VOC-style folder.")
    ],
    out: OutOption = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Comma-separated class names, or 'auto' (sorted names found). Default: the 20 VOC classes.",
        ),
    ] = None,
    classes_file: ClassesFileOption = None,
    train_sets: Annotated[
        str | None,
        typer.Option(
            "--train-sets",
            help="Split files for 'train', comma-separated: e.g. 2007/trainval and 2012/trainval (VOCdevkit), "
                 "or trainval (one folder).",
        ),
    ] = None,
    test_sets: Annotated[
        str | None,
        typer.Option("--test-sets", help="Split files for 'test', e.g. 2007/test; 'none' for no test split."),
    ] = None,
    verify_images: VerifyImagesOption = False,
    strict: StrictOption = False,
    workers: WorkersOption = None,
    val_fraction: ValFractionOption = 0.1,
    split_seed: SplitSeedOption = 0,
    split: SplitOption = None,
    force: ForceOption = False,
) -> None:
    """Validate a VOC-format dataset and write manifest.json + <split>.jsonl (a folder without split files is split
    by --split)."""
    run_prepare(root, out, force, prepare_voc, root=root, classes=class_spec(classes, classes_file),
                train_sets=train_sets, test_sets=test_sets, verify_images=verify_images, strict=strict,
                workers=workers, val_fraction=val_fraction, split_seed=split_seed, split=split)  # fmt: skip
