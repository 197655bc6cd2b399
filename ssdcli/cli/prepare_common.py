"""Options and steps shared by ``ssd prepare-voc``, ``prepare-coco`` and ``prepare-yolo``, declared once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ssdcli.cli.console import console
from ssdcli.cli.options import ranged_option
from ssdcli.cli.progress import reporting
from ssdcli.data.class_names import read_class_file
from ssdcli.data.label_stats import LABELS_PICTURE
from ssdcli.data.prepare import PrepareFailure, PrepareReport
from ssdcli.errors import SsdError

OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Output folder (default: ./prepared/ROOT-NAME).")
]
ClassesFileOption = Annotated[
    Path | None, typer.Option("--classes-file", help="Text file with one class name per line.")
]
VerifyImagesOption = Annotated[
    bool, typer.Option("--verify-images", help="Decode every image fully (slow) instead of reading headers only.")
]
StrictOption = Annotated[
    bool, typer.Option("--strict", help="Fail (write nothing) when any problem of severity 'warning' is found.")
]
WorkersOption = Annotated[
    int | None,
    ranged_option(
        "--workers", "-j", help="Parallel parsing processes (default: CPU count; small datasets use one).", lo=1
    ),
]
ValFractionOption = Annotated[
    float,
    typer.Option(
        "--val-fraction", min=0.0, max=0.99,
        help="When the dataset has no val split: hold out this fraction of train (by image id, seeded) as val, "
             "the split training picks best.pth on. 0: none.",
    ),
]  # fmt: skip
SplitSeedOption = Annotated[int, typer.Option("--split-seed", min=0, help="Seed of the val hold-out and of --split.")]
SplitOption = Annotated[
    str | None,
    typer.Option(
        "--split",
        help="TRAIN,VAL,TEST fractions (e.g. 0.8,0.1,0.1, the default for images the source puts in no split). "
             "Given, the source's train split is re-split too into the splits it lacks (seeded, stratified by "
             "each image's rarest class).",
    ),
]  # fmt: skip
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace the prepared dataset (manifest.json, *.jsonl) already in --out.")
]


def class_spec(classes: str | None, classes_file: Path | None) -> list[str] | str | None:
    """``--classes`` / ``--classes-file`` -> what the library calls take (only one may be given)."""
    if classes is not None and classes_file is not None:
        raise SsdError("--classes and --classes-file: give only one")
    if classes_file is not None:
        return read_class_file(classes_file, "--classes-file")
    return classes


def run_prepare(
    dataset: Path, out: Path | None, force: bool, prepare: Callable[..., PrepareReport], **kwargs
) -> tuple[PrepareReport, Path]:
    """Default ``--out`` (``prepared/<dataset name>``), the ``--force`` check, progress bars, the report printed
    (also when nothing is usable). ``kwargs`` go to ``prepare``."""
    if out is None:
        out = Path("prepared") / (dataset.resolve().stem or "dataset")
    check_out(dataset, out, force)
    try:
        with reporting() as reporter:
            report = prepare(out=out, reporter=reporter, **kwargs)
    except PrepareFailure as e:
        print_report(e.report)
        raise
    print_report(report)
    return report, out


def check_out(root: Path, out: Path, force: bool) -> None:
    """``out`` is never the dataset folder itself; an earlier prepared dataset there is replaced only with --force."""
    if out.exists() and root.exists() and out.resolve() == root.resolve():
        raise SsdError(f"--out {out}: is the dataset folder itself; choose another folder (e.g. prepared/NAME)")
    earlier = sorted(out.glob("*.jsonl")) + [out / "manifest.json"] if out.is_dir() else []
    found = [p for p in earlier if p.exists()]
    if found and not force:
        raise SsdError(f"--out {out}: already holds a prepared dataset ({found[0].name}); use --force to replace "
                       "it, or another --out")


def print_report(report: PrepareReport) -> None:
    """Splits, problems (kind, count, examples) and per-class object counts as rich tables."""
    splits = Table(title="Splits", title_justify="left")
    for col in ("split", "from", "images", "objects", "difficult", "no objects"):
        splits.add_column(col, justify="right" if col not in ("split", "from") else "left")
    for name, s in report.splits.items():
        splits.add_row(name, ", ".join(s.sets), str(s.images), str(s.objects), str(s.difficult), str(s.empty_images))
    console.print(splits)

    if report.problems:
        problems = Table(title="Problems found", title_justify="left", show_lines=True)
        problems.add_column("kind")
        problems.add_column("severity")
        problems.add_column("count", justify="right")
        problems.add_column("examples", overflow="fold")
        for p in report.problems.values():
            sev = "[yellow]warning[/]" if p.severity == "warning" else "[dim]note[/]"
            examples = "\n".join(escape(e) for e in p.examples[:3])
            problems.add_row(f"{p.kind}\n[dim]{escape(p.description)}[/]", sev, str(p.count), examples)
        console.print(problems)
    else:
        console.print("[green]No problems found.[/]")
    if report.unknown_classes:
        top = sorted(report.unknown_classes.items(), key=lambda kv: -kv[1])[:10]
        console.print("Skipped class names: " + ", ".join(f"{escape(k)} ({v})" for k, v in top))

    title = "Classes found in the annotations (--classes auto)" if report.classes_auto else "Objects per class"
    per_class = Table(title=title, title_justify="left")
    per_class.add_column("label", justify="right")
    per_class.add_column("class")
    for name in report.splits:
        per_class.add_column(f"{name} objects (difficult)", justify="right")
    for i, c in enumerate(report.classes):
        cells = [f"{s.class_objects[i]} ({s.class_difficult[i]})" for s in report.splits.values()]
        per_class.add_row(str(i + 1), escape(c), *cells)
    console.print(per_class)

    if report.problems:
        warnings = report.warnings
        notes = sum(p.count for p in report.problems.values()) - warnings
        where = " (recorded under 'problems' and 'skipped' in manifest.json)" if report.written else ""
        console.print(f"{warnings} warning(s), {notes} note(s), {len(report.skipped)} image(s) skipped{where}")
    if report.written:
        files = ", ".join(["manifest.json"] + [f"{k}.jsonl" for k in report.splits] + [LABELS_PICTURE])
        console.print(f"Wrote [bold]{escape(str(report.out))}[/] ({files}) in {report.elapsed_s:.1f} s")
        console.print(f"Label statistics: {escape(str(report.out / LABELS_PICTURE))}")
