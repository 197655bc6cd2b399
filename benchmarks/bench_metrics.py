"""Time the VOC metric on a synthetic VOC2007-test-sized problem (after inference).

4952 images, 20 classes, ~3 objects per image (~10% difficult), 200 detections per image (~1M in all):
jittered copies and duplicates of the ground truth plus random boxes, scores quantised so ties occur.

    .venv/bin/python benchmarks/bench_metrics.py [--repeats 5] [--coco]

Prints the median wall time of ``voc_evaluate`` (matching + AP) for voc07, voc12 and both, and of the
conversion of detection dicts (the JSON format) to arrays, and of the whole ``evaluate_detections`` call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ssdcli.data.records import ImageRecord
from ssdcli.detections_io import DetectionArrays, detections_to_arrays
from ssdcli.engine.evaluator import evaluate_detections
from ssdcli.metrics.voc import GroundTruth, voc_evaluate

NUM_IMAGES, NUM_CLASSES, DETS_PER_IMAGE = 4952, 20, 200


def synthetic_problem(seed: int = 0) -> tuple[GroundTruth, DetectionArrays]:
    rng = np.random.default_rng(seed)
    n_obj = rng.integers(1, 6, NUM_IMAGES)
    g_img = np.repeat(np.arange(NUM_IMAGES), n_obj)
    g = len(g_img)
    xy = rng.uniform(1, 400, (g, 2))
    wh = rng.uniform(10, 200, (g, 2))
    g_boxes = np.round(np.concatenate([xy, xy + wh], 1))
    gt = GroundTruth(g_img, rng.integers(0, NUM_CLASSES, g), g_boxes, rng.random(g) < 0.1, NUM_IMAGES, NUM_CLASSES)
    n = NUM_IMAGES * DETS_PER_IMAGE
    d_img = np.repeat(np.arange(NUM_IMAGES), DETS_PER_IMAGE)
    # half of each image's detections sit near one of its objects, the rest are random
    near = rng.random(n) < 0.5
    first = np.cumsum(n_obj) - n_obj
    pick = first[d_img] + (rng.random(n) * n_obj[d_img]).astype(np.int64)
    jitter = rng.normal(0, 8, (n, 4))
    rxy = rng.uniform(1, 400, (n, 2))
    rand_boxes = np.concatenate([rxy, rxy + rng.uniform(10, 200, (n, 2))], 1)
    d_boxes = np.where(near[:, None], g_boxes[pick] + jitter, rand_boxes)
    d_cls = np.where(near & (rng.random(n) < 0.8), gt.class_index[pick], rng.integers(0, NUM_CLASSES, n))
    scores = np.round(rng.random(n), 3)
    return gt, DetectionArrays(d_img, d_cls, scores, d_boxes)


def split_records(gt: GroundTruth) -> list[ImageRecord]:
    cut = np.cumsum(np.bincount(gt.image_index, minlength=gt.num_images))[:-1]
    parts = zip(np.split(gt.boxes, cut), np.split(gt.class_index, cut), np.split(gt.difficult, cut))
    return [ImageRecord(str(i), f"/none/{i}.jpg", 500, 500, b.astype(np.float32), c + 1, d)
            for i, (b, c, d) in enumerate(parts)]


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (the latter is less sensitive to a busy machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def report(label: str, times: tuple[float, float], repeats: int) -> None:
    print(f"{label:58s} median wall {times[0]:.3f} s, cpu {times[1]:.3f} s over {repeats} repeats")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--coco", action="store_true", help="also time the COCO metric once (pycocotools, slow)")
    args = ap.parse_args()
    gt, dets = synthetic_problem()
    names = [f"class{i}" for i in range(NUM_CLASSES)]
    print(f"problem: {NUM_IMAGES} images, {NUM_CLASSES} classes, {len(gt.boxes)} objects "
          f"({int(gt.difficult.sum())} difficult), {len(dets)} detections")
    res = voc_evaluate(dets, gt, names, ("voc07", "voc12"))
    print(f"mAP voc07 {res['voc07'].map:.4f}  voc12 {res['voc12'].map:.4f}")
    for metrics in (("voc07",), ("voc12",), ("voc07", "voc12")):
        report(f"voc_evaluate {'+'.join(metrics)}", median_time(lambda: voc_evaluate(dets, gt, names, metrics), args.repeats),
               args.repeats)
    records = [
        {"image_id": str(i), "label": names[c], "score": float(s), "box": [float(v) for v in b]}
        for i, c, s, b in zip(dets.image_index, dets.class_index, dets.scores, dets.boxes)
    ]
    ids = [str(i) for i in range(NUM_IMAGES)]
    report("detections_to_arrays (dict list -> arrays)", median_time(lambda: detections_to_arrays(records, ids, names),
           args.repeats), args.repeats)
    split = split_records(gt)
    report("evaluate_detections voc07+voc12 from dicts (all above)",
           median_time(lambda: evaluate_detections(records, split, names, ("voc07", "voc12")), args.repeats), args.repeats)
    if args.coco:
        from ssdcli.metrics.coco import coco_evaluate

        t0 = time.perf_counter()
        r = coco_evaluate(dets, gt, names)
        print(f"coco_evaluate once {time.perf_counter() - t0:.1f} s (AP {r.stats['AP']:.4f})")


if __name__ == "__main__":
    main()
