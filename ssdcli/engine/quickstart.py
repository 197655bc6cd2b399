"""The quickstart plan: built-in sample data, then the real `ssd` commands a user would type, in order.

The plan is data (argument lists), so the CLI can print each command before running it through the same
Typer app: what the user sees is exactly what they can repeat on their own data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ssdcli.data.samples import SAMPLE_CLASSES

# The small BatchNorm SSD trained from scratch with AdamW + cosine: a few minutes on 2 CPU cores (the README
# gives the measured time and mAP).
QUICKSTART_ARCH = "ssd-mini"
QUICKSTART_IMG_SIZE = 128
QUICKSTART_ITERS = 600
QUICKSTART_BATCH = 32
QUICKSTART_LR = 3e-3


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


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
