"""Throughput of ``prepare_coco`` on a synthetic COCO instance file: 20k images, ~150k annotations (header reads only).

Images are hard links to a few small JPEGs under 20k names (as ``bench_prepare.py`` does for VOC); the JSON has 80
categories with COCO's non-contiguous ids, float ``[x, y, w, h]`` boxes, 1% crowd regions, 0-15 objects per image.
Prints the median wall time of ``--repeats`` runs for each worker count (the label picture included), the CPU time
used (this process and its workers) and the load average, which says how busy the shared machine was.

    python benchmarks/bench_prepare_coco.py [--images 20000] [--annotations 150000] [--workers 2 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench_prepare import time_prepares  # the same timing loop as the VOC benchmark (benchmarks/ on sys.path)

from ssdcli.data.coco_source import prepare_coco

W, H = 640, 480
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # 80 ids, as COCO's


def build(root: Path, n_images: int, n_annotations: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "train2017"
    folder.mkdir(parents=True)
    sources = []
    for i in range(4):
        src = root / f"source{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(src, quality=85)
        sources.append(src)
    images = []
    for i in range(n_images):
        name = f"{i:012d}.jpg"
        os.link(sources[i % len(sources)], folder / name)
        images.append({"id": i, "file_name": name, "width": W, "height": H})
    image_id = rng.integers(0, n_images, n_annotations)
    xy = rng.uniform(0, [W - 50, H - 50], (n_annotations, 2))
    wh = rng.uniform(2, 50, (n_annotations, 2))
    boxes = np.round(np.concatenate([xy, wh], axis=1), 2).tolist()
    cats = rng.choice(COCO_IDS, n_annotations).tolist()
    crowd = (rng.random(n_annotations) < 0.01).astype(int).tolist()
    annotations = [{"id": k + 1, "image_id": int(i), "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": r,
                    "segmentation": []}
                   for k, (i, c, b, r) in enumerate(zip(image_id.tolist(), cats, boxes, crowd))]  # fmt: skip
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in COCO_IDS]
    (root / "annotations").mkdir()
    path = root / "annotations" / "instances_train2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--annotations", type=int, default=150000)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_prepare_coco_") as tmp:
        root = Path(tmp) / "coco"
        t = time.perf_counter()
        path = build(root, args.images, args.annotations)
        print(f"built {args.images} images, {args.annotations} annotations "
              f"({path.stat().st_size / 1e6:.0f} MB JSON) in {time.perf_counter() - t:.1f} s")  # fmt: skip
        time_prepares(lambda out, w: prepare_coco(root, out, workers=w), Path(tmp), args.workers, args.repeats,
                      args.images, args.annotations)


if __name__ == "__main__":
    main()
