"""The Python API in one script: a detector's whole life without the command line.

    python examples/python_api.py [--dir /tmp/ssd-api-example] [--iters 300]

1. writes the built-in sample dataset (drawn shapes, VOC layout) and prepares it, as ``ssd prepare-voc`` does;
2. trains ``ssd-mini`` with a hand-written loop over the core pieces (``build_model``, the model's own training
   augmentation, ``assign_targets``, ``multibox_loss``), to show how they fit together;
3. saves a self-describing checkpoint and evaluates it (VOC07 mAP@0.5) as ``ssd eval`` does;
4. runs :class:`ssdcli.Detector` on two test images and prints the boxes in original-image pixels.

For real training use ``ssd train`` (``ssdcli.engine.trainer.train``): it adds the lr schedule, resuming,
validation, AMP and multi-GPU on top of the same pieces.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import ssdcli
from ssdcli.data.dataset import DetectionDataset, collate_detections
from ssdcli.data.prepare import prepare_voc
from ssdcli.data.records import load_prepared
from ssdcli.data.samples import write_sample_dataset
from ssdcli.engine.evaluator import evaluate_detector


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("ssd-api-example"))
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-images", type=int, default=300)
    ap.add_argument("--test-images", type=int, default=100)
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    # 1. data: VOC folder -> prepared index (manifest.json + one JSONL per split)
    voc = write_sample_dataset(args.dir / "voc", num_train=args.train_images, num_test=args.test_images)
    prepare_voc(voc, args.dir / "prepared", classes="auto")
    data = load_prepared(args.dir / "prepared")
    print(f"classes {data.classes}; {len(data.split('train'))} train / {len(data.split('test'))} test images")

    # 2. model + the augmentation it is trained with (SSD: photometric, zoom-out, min-IoU crop, flip, resize)
    model = ssdcli.build_model("ssd-mini", num_classes=len(data.classes) + 1, class_names=data.classes)
    dataset = DetectionDataset(data.split("train"), model.train_augment(max_zoom_out=1.0), seed=0)
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, collate_fn=collate_detections, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=args.iters, pct_start=0.05)
    priors = model.priors  # [P,4] cxcywh, built from the prior spec stored in model.config (ssdcli.make_priors)
    model.train()
    it = 0
    while it < args.iters:
        for images, boxes, labels in loader:  # uint8 [N,3,S,S], per image relative xyxy boxes and 1-based labels
            x = model.config.preprocess.normalize(images)
            loc_t, cls_t = ssdcli.assign_targets(boxes, labels, priors)
            locs, logits = model(x)
            loc_loss, cls_loss = ssdcli.multibox_loss(locs, logits, loc_t, cls_t, neg_pos_ratio=3)
            optimizer.zero_grad(set_to_none=True)
            (loc_loss + cls_loss).backward()
            optimizer.step()
            schedule.step()
            it += 1
            if it % 50 == 0 or it == 1:
                print(f"iteration {it}/{args.iters}: loc {loc_loss.item():.3f}  cls {cls_loss.item():.3f}")
            if it == args.iters:
                break

    # 3. checkpoint (architecture, classes, input size, priors and preprocessing travel with the weights) + eval
    ckpt = args.dir / "ssd-mini.pth"
    ssdcli.save_checkpoint(ckpt, model.eval())
    detector = ssdcli.Detector.from_checkpoint(ckpt, device="cpu")
    report = evaluate_detector(detector, data.split("test"), data.classes, metrics=("voc07",))
    mean_ap = float(report.results["voc07"].map)
    print(f"test mAP@0.5 (VOC07 11-point): {mean_ap:.4f}")

    # 4. inference on files: boxes in original-image pixels (VOC convention), scores, names
    paths = [r.path for r in data.split("test")[:2]]
    for path, p in zip(paths, detector.predict(paths)):
        keep = p.scores >= 0.5
        print(f"{Path(path).name} ({p.width}x{p.height}): {int(keep.sum())} detections >= 0.5")
        for box, score, name in zip(p.boxes[keep], p.scores[keep], [n for n, k in zip(p.names, keep) if k]):
            print(f"  {name:<9} {score:.3f}  {[round(float(v), 1) for v in box]}")
    return mean_ap


if __name__ == "__main__":
    main()
