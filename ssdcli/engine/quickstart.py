"""The quickstart plan: built-in sample data, then the real `ssd` commands a user would type, in order.

The plan is data (argument lists), so the CLI can print each command before running it through the same
Typer app: what the user sees is exactly what they can repeat on their own data.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from ssdcli.data.samples import SAMPLE_CLASSES
from ssdcli.errors import SsdError
from ssdcli.io_utils import atomic_write_text

# The small BatchNorm SSD with its own default recipe (ssdcli/models/ssd/recipes.py: AdamW + cosine, no zoom-out,
# channels-last, 122.222 epochs = 2200 iterations of batch 16 on the 300 sample training images; measured on 2 quiet
# CPU cores: 197 s, test mAP@0.5 0.914). The sample data has its own val split (best.pth is chosen on it).
QUICKSTART_ARCH = "ssd-mini"
SAMPLE_VAL_IMAGES = 50


@dataclass(frozen=True)
class Step:
    title: str
    argv: list[str]

    def shell(self) -> str:
        return "ssd " + " ".join(_quote(a) for a in self.argv)


@dataclass(frozen=True)
class QuickstartPlan:
    root: Path
    steps: list[Step]

    @property
    def sample_voc(self) -> Path:
        return self.root / "sample-voc"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "quickstart"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval" / "results.json"

    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"


def quickstart_plan(root: Path, device: str = "auto", iters: int = 0, workers: int = 1) -> QuickstartPlan:
    """The commands of the quickstart; ``iters`` 0 trains for the recipe's length."""
    root = Path(root)
    voc, prepared, runs = root / "sample-voc", root / "prepared", root / "runs"
    best = runs / "quickstart" / "best.pth"
    onnx = root / "model.onnx"
    steps = [
        Step("prepare the dataset",
             ["prepare-voc", str(voc), "--out", str(prepared), "--classes", ",".join(SAMPLE_CLASSES)]),
        Step(
            "train",
            # the bare command: ssd-mini's own recipe (its defaults are the quickstart's measured recipe)
            ["train", "--data", str(prepared), "--arch", QUICKSTART_ARCH,
             *(["--iters", str(iters)] if iters else []), "--workers", str(workers),
             "--project", str(runs), "--name", "quickstart", "--device", device],
        ),
        Step(
            "evaluate",
            ["eval", "--weights", str(best), "--data", str(prepared), "--metric", "voc07,voc12,coco", "--json",
             str(root / "eval" / "results.json"), "--out", str(root / "eval"), "--device", device],
        ),
        Step(
            "detect",
            ["detect", str(voc / "JPEGImages" / "test_*.jpg"), "--weights", str(best),
             "--out", str(root / "detections"), "--json", str(root / "detections" / "detections.json"),
             "--device", device],
        ),
        Step("export to ONNX", ["export-onnx", str(best), "--out", str(onnx)]),
        Step(
            "benchmark PyTorch vs ONNX Runtime",
            ["benchmark", "--weights", str(best), "--batch", "1,8", "--engines", "torch,onnx", "--device", "cpu",
             "--json", str(root / "benchmark.json")],
        ),
    ]
    return QuickstartPlan(root=root, steps=steps)


MARKER = ".ssd-quickstart.json"  # in the output folder: what a quickstart created there (what --force may remove)


def planned_outputs(plan: QuickstartPlan) -> list[Path]:
    """Everything a quickstart creates in ``plan.root`` (the training step's run folder, not all of ``runs/``)."""
    return [plan.sample_voc, plan.prepared, plan.run_dir, plan.eval_json.parent, plan.root / "detections",
            plan.onnx, plan.root / "benchmark.json"]


def previous_outputs(plan: QuickstartPlan) -> list[Path]:
    """The planned outputs that already exist (the training step would otherwise write a new run folder next to
    the old one and later steps would read the old weights)."""
    return [p for p in planned_outputs(plan) if p.exists() or p.is_symlink()]


def read_marker(root: Path) -> set[str]:
    """Paths (relative to ``root``) that an earlier quickstart recorded as its own; empty without a marker."""
    path = root / MARKER
    if not path.exists():
        return set()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        created = data["created"]
        if not isinstance(created, list) or not all(isinstance(c, str) for c in created):
            raise TypeError("'created' is not a list of names")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise SsdError(f"{path}: not a quickstart marker ({e}); remove it or choose another --out") from None
    return set(created)


def write_marker(plan: QuickstartPlan) -> None:
    """Record the outputs this quickstart is about to create (written before the first one)."""
    created = [p.relative_to(plan.root).as_posix() for p in planned_outputs(plan)]
    atomic_write_text(plan.root / MARKER, json.dumps({"tool": "ssd quickstart", "created": created}, indent=1) + "\n")


def clear_previous_outputs(plan: QuickstartPlan, force: bool) -> list[Path]:
    """Refuse to run over an earlier quickstart unless ``force``; with ``force`` remove only what the marker says
    a quickstart created. A planned output that the marker does not list (the user's own file or folder, or a
    quickstart older than the marker) is never removed: SsdError, even with ``force``. Returns what was removed."""
    found = previous_outputs(plan)
    if not found:
        return []
    ours = read_marker(plan.root)
    foreign = [p for p in found if p.relative_to(plan.root).as_posix() not in ours]
    if foreign:
        raise SsdError(f"{foreign[0]}: exists and was not created by a quickstart (no record in "
                       f"{plan.root / MARKER}); it is never removed: move it away or choose another --out")
    if not force:
        raise SsdError(f"{plan.root} holds an earlier quickstart ({found[0].name} ...): pass --force to replace it, "
                       f"or choose another --out")
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return found


def _quote(arg: str) -> str:
    return shlex.quote(arg)
