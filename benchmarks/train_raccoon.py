"""The bare `ssd train --time-limit` on the real raccoon photographs, scored on their test split.

    python benchmarks/train_raccoon.py --arch ssdlite320 --minutes 15
    python benchmarks/train_raccoon.py --arch centernet-res18 --minutes 15 --seed 1
    python benchmarks/train_raccoon.py --arch ssdlite320 --minutes 15 -- --ema      # extra `ssd train` flags

This is a thin caller of the code path a user runs: it prepares ../shared/datasets/raccoon exactly as
``ssd prepare-voc RACCOON --out P --classes auto`` does (160 trainval -> 144 train + 16 held-out val, 40 test),
runs ``ssd train --data P --arch ARCH --time-limit Nm --device cpu --seed S`` through the real command line (in
this process, so nothing but the given flags differs from a user's run), then scores ``best.pth`` (chosen on val)
and ``last.pth`` on the 40 test images: VOC07 11-point and VOC12 all-points AP@0.5, and COCO AP@[.5:.95] / AP@0.75
(loose boxes score well at IoU 0.5 only). One summary line per checkpoint; a JSON in the run folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ssdcli.cli.main import app
from ssdcli.data.prepare import prepare_voc
from ssdcli.data.records import load_prepared
from ssdcli.engine.evaluator import evaluate_detector, load_detector
from ssdcli.postprocess import PostprocessConfig

RACCOON = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "raccoon"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="ssdlite320")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-raccoon", help="--project of the training run")
    ap.add_argument("--raccoon", type=Path, default=RACCOON, help="the raccoon VOC folder")
    ap.add_argument("train_flags", nargs="*", help="extra `ssd train` flags, after --")
    args = ap.parse_args()
    if not args.raccoon.is_dir():
        raise SystemExit(f"{args.raccoon} not found")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "raccoon"
        prepare_voc(args.raccoon, prepared, classes="auto")
        name = f"{args.arch}-s{args.seed}"
        argv = ["train", "--data", str(prepared), "--arch", args.arch, "--time-limit", f"{args.minutes:g}m",
                "--device", "cpu", "--seed", str(args.seed), "--project", args.out, "--name", name, *args.train_flags]
        print("$ ssd " + " ".join(argv))
        t0 = time.monotonic()
        app(args=argv, standalone_mode=False)
        minutes = (time.monotonic() - t0) / 60
        run_dir = max(Path(args.out).glob(f"{name}*"), key=lambda p: p.stat().st_mtime)
        data = load_prepared(prepared)
        summary: dict = {"arch": args.arch, "seed": args.seed, "flags": args.train_flags,
                         "wall_minutes": round(minutes, 2), "run_dir": str(run_dir)}  # fmt: skip
        options = json.loads((run_dir / "options.json").read_text())
        summary["options"] = options
        for ckpt in ("best.pth", "last.pth"):
            if not (run_dir / ckpt).exists():
                continue
            detector = load_detector(run_dir / ckpt, torch.device("cpu"), PostprocessConfig())
            report = evaluate_detector(detector, data.split("test"), data.classes, metrics=("voc07", "voc12", "coco"))
            coco = report.results["coco"].stats  # type: ignore[attr-defined]
            row = {"voc07": report.results["voc07"].map, "voc12": report.results["voc12"].map,  # type: ignore[attr-defined]
                   "coco_ap": coco["AP"], "coco_ap75": coco["AP75"],
                   "iteration": torch.load(run_dir / ckpt, weights_only=True, map_location="cpu")["meta"]["iteration"]}  # fmt: skip
            summary[ckpt] = row
            print(f"RESULT {args.arch} seed {args.seed} {ckpt} (iteration {row['iteration']}): test mAP@0.5 voc07 "
                  f"{row['voc07']:.4f}  voc12 {row['voc12']:.4f}  COCO AP {row['coco_ap']:.4f}  AP75 "
                  f"{row['coco_ap75']:.4f}  ({minutes:.1f} min wall)")  # fmt: skip
        (run_dir / "raccoon_summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
