"""The comparison point for ``train_raccoon.py``: torchvision's own SSDLite320-MobileNetV3 trained from scratch on
the raccoon photographs under the same CPU wall-clock budget, fed by the same data pipeline, scored by the same
evaluator.

    python benchmarks/train_raccoon_torchvision.py --minutes 15 [--policy ssd|ssdlite] [--zoom-out 1] [--raccoon DIR]

Model: ``torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
num_classes=2)`` with its own losses, box coder, anchors and transform. Recipe: torchvision's detection reference
for SSDLite (SGD momentum 0.9, weight decay 4e-5, cosine schedule with linear warm-up; lr 0.15 at a global batch of
192, scaled linearly to the batch used here). Data: the SSD training augmentation of ``ssdcli`` at 320x320 (the
reference "ssdlite" policy is a subset of it). Evaluation: its detections at score >= 0.01, NMS 0.45, top 200 (our
eval settings), converted to VOC pixel boxes, through ``ssdcli``'s VOC07/VOC12 evaluator on the 40 test images.
``--policy ssdlite`` gives it the torchvision reference's own SSDLite augmentation (min-IoU crop and flip, no
photometric distortion or zoom-out) instead.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from ssdcli.data.dataset import DetectionDataset, collate_detections
from ssdcli.data.images import read_image
from ssdcli.data.prepare import prepare_voc
from ssdcli.data.records import load_prepared
from ssdcli.data.transforms import SSDTrainAugment
from ssdcli.engine.evaluator import evaluate_detections
from ssdcli.engine.sampler import ResumableBatchSampler

RACCOON = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "raccoon"
SIZE = 320


def _build(num_classes: int, base_lr: float, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """torchvision's SSDLite from scratch and the reference optimiser (no weight decay on norms and biases)."""
    torch.manual_seed(seed)
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 4e-5}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=base_lr, momentum=0.9)
    return model.train(), opt


def _lr(it: int, total: int, base: float, warmup: int) -> float:
    if it < warmup:
        return base * (it + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(1, total - warmup)))


def _step(model, opt, images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> float:
    imgs = [im.float() / 255.0 for im in images]
    targets = [{"boxes": b * SIZE, "labels": lab} for b, lab in zip(boxes, labels)]
    losses = model(imgs, targets)
    loss = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--raccoon", type=Path, default=RACCOON)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zoom-out", type=float, default=None,
                    help="with --policy ssd: the zoom-out limit (default the paper's 4; 1: off), as train_raccoon.py")
    ap.add_argument("--policy", default="ssd", choices=("ssd", "ssdlite"),
                    help="ssd: the full SSD augmentation (photometric, zoom-out, min-IoU crop, flip); ssdlite: the "
                         "torchvision reference's SSDLite policy (min-IoU crop and flip only)")
    args = ap.parse_args()
    if not args.raccoon.is_dir():
        raise SystemExit(f"{args.raccoon} not found")
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "raccoon"
        prepare_voc(args.raccoon, prepared, classes="auto")
        data = load_prepared(prepared)
        base_lr = 0.15 * args.batch / 192
        if args.policy == "ssdlite":
            augment = SSDTrainAugment(SIZE, photometric=False, zoom_out_p=0.0)
        elif args.zoom_out is not None and args.zoom_out <= 1.0:
            augment = SSDTrainAugment(SIZE, zoom_out_p=0.0)
        else:
            augment = SSDTrainAugment(SIZE, max_zoom_out=args.zoom_out or 4.0)
        dataset = DetectionDataset(data.split("train"), augment, seed=args.seed)
        sampler = ResumableBatchSampler(len(dataset), args.batch, args.seed, 0, 10**7)  # new draws every epoch
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers, collate_fn=collate_detections)
        batches = iter(loader)
        # probe: the median step time sets the schedule length so the cosine ends near the budget
        model, opt = _build(len(data.classes) + 1, base_lr, args.seed)
        probe = []
        for _ in range(6):
            t = time.perf_counter()
            _step(model, opt, *next(batches))
            probe.append(time.perf_counter() - t)
        total = max(50, int(args.minutes * 60 / statistics.median(probe[2:]) * 0.97))
        warmup = min(100, total // 10)
        print(f"torchvision ssdlite320: {statistics.median(probe[2:]):.2f} s/iteration, schedule {total} iterations")
        model, opt = _build(len(data.classes) + 1, base_lr, args.seed)
        t0 = time.monotonic()
        it = 0
        while it < total and time.monotonic() - t0 < args.minutes * 60:
            for g in opt.param_groups:
                g["lr"] = _lr(it, total, base_lr, warmup)
            loss = _step(model, opt, *next(batches))
            if not math.isfinite(loss):
                raise SystemExit(f"non-finite loss at iteration {it}")
            if it % 50 == 0:
                print(f"iteration {it}/{total} loss {loss:.3f} ({(time.monotonic() - t0) / 60:.1f} min)", flush=True)
            it += 1
        minutes = (time.monotonic() - t0) / 60
        model.eval()
        model.score_thresh, model.nms_thresh, model.detections_per_img = 0.01, 0.45, 200
        dets = []
        records = data.split("test")
        with torch.no_grad():
            for rec in records:
                out = model([read_image(rec.path).float() / 255.0])[0]
                for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
                    x0, y0, x1, y1 = box  # continuous pixels -> VOC 1-based inclusive
                    dets.append({"image_id": rec.id, "label": data.classes[label - 1], "score": score,
                                 "box": [x0 + 1, y0 + 1, x1, y1]})
        report = evaluate_detections(dets, records, data.classes, ("voc07", "voc12"))
        res = {m: float(report.results[m].map) for m in ("voc07", "voc12")}
        print(json.dumps({"policy": args.policy, "zoom_out": args.zoom_out, "iterations": it, "schedule": total, "train_minutes": round(minutes, 2), "map": res}))
        print(f"RESULT torchvision-ssdlite320 ({args.policy} augmentation): test mAP@0.5 voc07 {res['voc07']:.4f}  voc12 {res['voc12']:.4f}  "
              f"({it} iterations in {minutes:.1f} min, batch {args.batch}, {torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    main()
