"""The quickstart plan: built-in sample data, then the real `ssd` commands a user would type, in order.

The plan is data (argument lists), so the CLI can print each command before running it through the same
Typer app: what the user sees is exactly what they can repeat on their own data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ssdcli.data.samples import SAMPLE_CLASSES
from ssdcli.errors import SsdError

# The small BatchNorm SSD trained from scratch with AdamW + cosine, no zoom-out (objects are already small at 128 px),
# channels-last (1.5x faster on CPU). Measured on 2 quiet CPU cores: 2200 iterations in 197 s, test mAP@0.5 0.914;
# 1800 iterations gave 0.895, 1200 (batch 16) 0.83 (experiments listed in the README).
QUICKSTART_ARCH = "ssd-mini"
QUICKSTART_IMG_SIZE = 128
QUICKSTART_ITERS = 2200
QUICKSTART_BATCH = 16
QUICKSTART_LR = 3e-3
QUICKSTART_WEIGHT_DECAY = 0.05


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


def quickstart_plan(root: Path, device: str = "auto", iters: int = QUICKSTART_ITERS, workers: int = 1) -> QuickstartPlan:
    root = Path(root)
    voc, prepared, runs = root / "sample-voc", root / "prepared", root / "runs"
    best = runs / "quickstart" / "best.pth"
    onnx = root / "model.onnx"
    steps = [
        Step("prepare the dataset", ["prepare-voc", str(voc), "--out", str(prepared), "--classes", ",".join(SAMPLE_CLASSES)]),
        Step(
            "train",
            ["train", "--data", str(prepared), "--arch", QUICKSTART_ARCH, "--img-size", str(QUICKSTART_IMG_SIZE),
             "--iters", str(iters), "--batch", str(QUICKSTART_BATCH), "--optimizer", "adamw", "--lr", str(QUICKSTART_LR),
             "--weight-decay", str(QUICKSTART_WEIGHT_DECAY), "--zoom-out", "1", "--channels-last",
             "--schedule", "cosine", "--warmup-iters", "20", "--eval-every", str(max(1, iters // 2)), "--workers", str(workers),
             "--project", str(runs), "--name", "quickstart", "--device", device],
        ),
        Step(
            "evaluate",
            ["eval", "--weights", str(best), "--data", str(prepared), "--metric", "voc07,voc12", "--json",
             str(root / "eval" / "results.json"), "--out", str(root / "eval"), "--device", device],
        ),
        Step(
            "detect",
            ["detect", str(voc / "JPEGImages" / "test_*.jpg"), "--weights", str(best), "--out", str(root / "detections"),
             "--json", str(root / "detections" / "detections.json"), "--device", device],
        ),
        Step("export to ONNX", ["export-onnx", str(best), "-o", str(onnx), "--force"]),
        Step(
            "benchmark PyTorch vs ONNX Runtime",
            ["benchmark", "--weights", str(best), "--batch", "1,8", "--engines", "torch,onnx", "--device", "cpu",
             "--json", str(root / "benchmark.json")],
        ),
    ]
    return QuickstartPlan(root=root, steps=steps)


def previous_outputs(plan: QuickstartPlan) -> list[Path]:
    """The outputs of an earlier quickstart in ``plan.root`` (the training step would otherwise write a new run
    folder next to the old one and later steps would read the old weights)."""
    names = (plan.sample_voc, plan.prepared, plan.root / "runs", plan.eval_json.parent, plan.root / "detections",
             plan.onnx, plan.root / "benchmark.json")
    return [p for p in names if p.exists()]


def clear_previous_outputs(plan: QuickstartPlan, force: bool) -> None:
    """Refuse to run over an earlier quickstart unless ``force``; with ``force`` remove only its own outputs."""
    found = previous_outputs(plan)
    if not found:
        return
    if not force:
        raise SsdError(f"{plan.root} holds an earlier quickstart ({found[0].name} ...): pass --force to replace it, "
                       f"or choose another --dir")
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
