"""Time what "look at the data" adds: ``labels.png`` of a 20,000-image set, and the confusion matrix of ``ssd eval``.

    .venv/bin/python benchmarks/bench_look.py [--repeats 3]

* label statistics: 20,000 synthetic 640x480 images, 0-5 boxes each (~50k), 80 classes, three splits: the
  numpy gathering alone and the whole ``write_label_stats`` (gathering + six matplotlib panels + PNG, atomic);
* confusion matrix: the VOC2007-test-sized problem of ``bench_metrics.py`` (4952 images, 20 classes, ~1M
  detections) at score thresholds 0.25 (the default) and 0.01 (every detection of an evaluation).

Prints the median wall time of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_metrics import synthetic_problem

from ssdcli.data.label_stats import label_stats, write_label_stats
from ssdcli.data.records import ImageRecord
from ssdcli.metrics.confusion import confusion_matrix


def synthetic_records(n: int = 20_000, classes: int = 80, seed: int = 0) -> dict[str, list[ImageRecord]]:
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        k = int(rng.integers(0, 6))
        xy, wh = rng.uniform(1, 400, (k, 2)), rng.uniform(5, 200, (k, 2))
        recs.append(ImageRecord(str(i), "", 640, 480, np.c_[xy, xy + wh].astype(np.float32),
                                rng.integers(1, classes + 1, k), rng.random(k) < 0.05))  # fmt: skip
    return {"train": recs[: n * 8 // 10], "val": recs[n * 8 // 10 : n * 9 // 10], "test": recs[n * 9 // 10 :]}


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    splits = synthetic_records()
    names = [f"class{i}" for i in range(80)]
    with tempfile.TemporaryDirectory() as tmp:
        write_label_stats(Path(tmp), splits, names)  # warm-up: matplotlib import, font cache
        gather = median_time(lambda: label_stats(splits, names), args.repeats)
        whole = median_time(lambda: write_label_stats(Path(tmp), splits, names, "synthetic"), args.repeats)
    boxes = sum(len(r.labels) for v in splits.values() for r in v)
    print(f"label statistics, 20000 images / {boxes} boxes / 80 classes: gather {gather:.3f} s, "
          f"labels.png {whole:.3f} s")
    gt, dets = synthetic_problem()
    cls = [str(i) for i in range(gt.num_classes)]
    for score in (0.25, 0.01):
        t = median_time(lambda s=score: confusion_matrix(dets, gt, cls, 0.5, s), args.repeats)
        kept = int((dets.scores >= score).sum())
        print(f"confusion matrix, {gt.num_images} images, {kept} detections >= {score}: {t:.3f} s")


if __name__ == "__main__":
    main()
