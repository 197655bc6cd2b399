"""Options shared by several commands, declared once: names, help, declared ranges, choices, old spellings.

One vocabulary (README "Options shared by several commands"):

* the model: ``--weights/-w`` (a positional alias where it reads naturally: ``ssd export-onnx best.pth``);
* the output: ``--out/-o`` (a folder or a file, whatever the command writes); ``--force`` to replace files that
  the command did not create (never an input: the weights, the data, a manifest);
* the detector: ``--conf`` (score threshold), ``--iou`` (NMS IoU), ``--max-det`` (detections kept per image),
  checked once by :meth:`ssdcli.postprocess.PostprocessConfig.validate`; ``detect --show-conf`` is the drawing
  threshold;
* ``--device``, ``--batch``, ``--workers``, ``--project``/``--name`` (run folders).

Numbers carry a declared range checked while the command line is parsed (before any work or folder creation):
a value outside it is one error naming the option and the allowed values. Old spellings (``--score``, ``--nms``,
``--nms-iou``, ``--top-k``, ``--output``, ``--dir``) are hidden options resolved by :func:`renamed`, which prints a
one-line deprecation note.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

try:  # Typer >= 0.22 vendors Click
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older Typer with Click installed
    from click import get_current_context

from ssdcli.cli.console import warn
from ssdcli.engine.runs import check_run_name
from ssdcli.errors import SsdError

# ------------------------------------------------------------------------------------------ declared ranges


class OptionValueError(typer.BadParameter):
    """A value refused at parse time; the message starts with the value: shown as ``--option VALUE: why``."""


def interval(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> str:
    """Human text of a range: ``[0, 1)``, ``>= 1``, ``(0, 1]``."""
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def in_range(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Callable[[Any], Any]:
    """A Typer callback refusing values outside the range (``None`` passes: an option not given)."""
    text = interval(lo, hi, lo_open=lo_open, hi_open=hi_open)

    def check(value: Any) -> Any:
        if value is None:
            return value
        bad = isinstance(value, float) and not math.isfinite(value)
        bad = bad or (lo is not None and (value <= lo if lo_open else value < lo))
        bad = bad or (hi is not None and (value >= hi if hi_open else value > hi))
        if bad:
            raise OptionValueError(f"{value:g}: outside the allowed range {text}")
        return value

    return check


def ranged_option(*names: str, help: str, hidden: bool = False, **bounds: Any) -> Any:
    """``typer.Option`` with a declared range: shown at the end of the help, checked at parse time."""
    rng = interval(**bounds)
    return typer.Option(*names, help=f"{help} Range: {rng}.", callback=in_range(**bounds), hidden=hidden)


def comma_choices(choices: type[enum.Enum], noun: str) -> Callable[[str], str]:
    """A callback for a comma-separated list of enum values (``voc07,coco``): a wrong name is a clear error."""
    allowed = [c.value for c in choices]

    def check(value: str | None) -> str | None:
        if value is None:
            return value
        parts = [p.strip().lower() for p in value.split(",") if p.strip()]
        wrong = [p for p in parts if p not in allowed]
        if not parts or wrong:
            shown = ", ".join(wrong) if wrong else "(empty)"
            raise OptionValueError(f"{shown}: unknown {noun} (choose from {', '.join(allowed)}; comma-separated)")
        return ",".join(parts)

    return check


# ------------------------------------------------------------------------------------------ old spellings


def renamed(new: str, old: str) -> Any:
    """Value of the option parameter ``new``, or of its deprecated spelling ``old`` (with a one-line note).

    Call it from inside a command; both are parameter names of that command. Giving both is an error.
    """
    ctx = get_current_context()
    flags = {p.name: p.opts[0] for p in ctx.command.params if p.name}
    old_value = ctx.params.get(old)
    if old_value is None:
        return ctx.params.get(new)
    if given(new):
        raise SsdError(f"{flags[old]} and {flags[new]}: give only {flags[new]} ({flags[old]} is its old spelling)")
    warn(f"{flags[old]} is deprecated and will be removed: use {flags[new]} (same meaning)")
    return old_value


def given(param: str) -> bool:
    """True when the option parameter ``param`` of the running command was given on the command line."""
    ctx = get_current_context()
    source = ctx.get_parameter_source(param)
    return source is not None and source.name != "DEFAULT"


# ------------------------------------------------------------------------------------------ the options

DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N.")
]

_WEIGHTS_HELP = "Model: a native checkpoint (.pth) or an exported model (.onnx)."
WeightsOption = Annotated[str, typer.Option("--weights", "-w", help=_WEIGHTS_HELP, show_default=False)]
OptionalWeightsOption = Annotated[Optional[str], typer.Option("--weights", "-w", help=_WEIGHTS_HELP)]
_COCO_HELP = (" Or coco-ssd300 / coco-ssdlite320: torchvision's COCO model, downloaded once through torch.hub "
              "(offline: the error names the file and its folder), converted and cached.")
PretrainedWeightsOption = Annotated[
    str, typer.Option("--weights", "-w", help=_WEIGHTS_HELP + _COCO_HELP, show_default=False)
]

ForceOption = Annotated[
    bool,
    typer.Option("--force", help="Replace existing output files (never an input: weights, data, manifest)."),
]

JsonOption = Annotated[Optional[Path], typer.Option("--json", help="Write the results to this JSON file.")]

ConfOption = Annotated[
    float,
    ranged_option(
        "--conf", help="Detector score threshold: lower-scoring detections are dropped (0.01: evaluation setting).",
        lo=0.0, hi=1.0, hi_open=True,
    ),
]
IouOption = Annotated[
    Optional[float],
    ranged_option("--iou", help="NMS IoU threshold: overlapping boxes of one class above it are merged (default: "
                  "the model's own, chosen by its training recipe; 0.45, the SSD paper's, for older checkpoints).",
                  lo=0.0, hi=1.0, lo_open=True),
]
MaxDetOption = Annotated[
    int, ranged_option("--max-det", help="Detections kept per image (highest scores).", lo=1)
]
BatchOption = Annotated[int, ranged_option("--batch", help="Images per forward pass.", lo=1)]
WorkersOption = Annotated[
    int, ranged_option("--workers", help="Image decoding processes (0: in the main process).", lo=0)
]
ProjectOption = Annotated[str, typer.Option("--project", help="Parent folder of the run folders.")]


def run_name_callback(value: str | None) -> str | None:
    """Parse-time check of ``--name``: one folder name, so the run cannot leave ``--project``."""
    if value is not None:
        try:
            check_run_name(value)
        except SsdError:
            raise OptionValueError(f"{value!r}: expected one folder name (no '/', '\\', '..'); --project chooses "
                                   "the parent folder") from None
    return value


NameOption = Annotated[
    str,
    typer.Option("--name", callback=run_name_callback,
                 help="Run folder name inside --project (auto-incremented: NAME2, NAME3...)."),
]

# Old spellings: hidden, same range, resolved with renamed(new, old).
OldScoreOption = Annotated[Optional[float], ranged_option("--score", help="Old name of --conf.", hidden=True,
                                                          lo=0.0, hi=1.0, hi_open=True)]
OldNmsOption = Annotated[Optional[float], ranged_option("--nms", help="Old name of --iou.", hidden=True,
                                                        lo=0.0, hi=1.0, lo_open=True)]
OldNmsIouOption = Annotated[Optional[float], ranged_option("--nms-iou", help="Old name of --iou.", hidden=True,
                                                           lo=0.0, hi=1.0, lo_open=True)]
OldTopKOption = Annotated[Optional[int], ranged_option("--top-k", help="Old name of --max-det.", hidden=True, lo=1)]
OldOutputOption = Annotated[Optional[Path], typer.Option("--output", help="Old name of --out.", hidden=True)]
OldDirOption = Annotated[Optional[Path], typer.Option("--dir", help="Old name of --out.", hidden=True)]


MAX_TEST_SCALE = 4.0


def _test_scales(value: str | None) -> str | None:
    """Parse-time check of ``--test-scales``: comma-separated numbers in (0, 4]."""
    if value is None:
        return value
    try:
        scales = [float(p) for p in value.split(",") if p.strip()]
    except ValueError:
        raise OptionValueError(f"{value!r}: expected comma-separated numbers, e.g. 0.5,0.75,1,1.25,1.5") from None
    if not scales or any(not (0 < s <= MAX_TEST_SCALE) for s in scales):
        raise OptionValueError(f"{value!r}: every scale must lie in {interval(0, MAX_TEST_SCALE, lo_open=True)}")
    return ",".join(f"{s:g}" for s in scales)


def parse_test_scales(value: str | None) -> tuple[float, ...] | None:
    """The scales of a checked ``--test-scales`` value (None when not given)."""
    return tuple(float(p) for p in value.split(",")) if value else None


FlipTestOption = Annotated[bool, typer.Option(
    "--flip-test", help="Test-time flip: also run the mirror image and average the heatmaps (CenterNet, .pth).")]
TestScalesOption = Annotated[Optional[str], typer.Option(
    "--test-scales", callback=_test_scales, help="Multi-scale testing, e.g. 0.5,0.75,1,1.25,1.5 (x the input "
    "size, rounded to 32): detections of all scales merged by NMS at --iou (CenterNet, .pth).")]


def postprocess_config(conf: float, iou: float | None, max_det: int, pre_nms_top_k: int | None = None) -> Any:
    """The detector's :class:`~ssdcli.postprocess.PostprocessConfig`, validated once (SsdError names the option)."""
    from ssdcli.postprocess import PostprocessConfig

    extra = {} if pre_nms_top_k is None else {"pre_nms_top_k": pre_nms_top_k}
    return PostprocessConfig(score_threshold=conf, nms_threshold=iou, top_k=max_det, **extra).validate()
