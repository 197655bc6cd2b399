"""Throughput of the SSD training augmentation on real photographs (issue 10): images/s per CPU worker.

Rows, side by side in one run, one thread (``torch.set_num_threads(1)``), S x S output:

* plain v2 composition (:class:`ssdcli.data.reference_aug.ReferenceAugment`) on images already decoded
* the fast path (:class:`ssdcli.data.transforms.SSDTrainAugment`) on images already decoded
* both again including JPEG decoding from the file bytes held in memory
  (fast path: :func:`ssdcli.data.dataset.load_sample`, which may decode at reduced scale)
* the fast path through a DataLoader (:class:`ssdcli.data.dataset.DetectionDataset`, files from the page
  cache) with N worker processes: total and per-worker images/s

Each figure is the median over ``--repeats`` passes over the images. Besides wall time, every row gives
images per second of CPU time (the process's, or the DataLoader workers' own), which is far less sensitive
to other load on a shared machine than wall time.

    .venv/bin/python benchmarks/bench_augment.py [--data ../shared/datasets/raccoon] [--size 300] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader
from torchvision.io import ImageReadMode, decode_jpeg

from ssdcli.data.dataset import DetectionDataset, collate_detections, load_sample, sample_generator
from ssdcli.data.images import read_image
from ssdcli.data.records import ImageRecord
from ssdcli.data.reference_aug import ReferenceAugment
from ssdcli.data.transforms import SSDTrainAugment

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/datasets/raccoon"


def voc_records(root: Path) -> list[ImageRecord]:
    """Minimal VOC reader for the benchmark (class ids in order of first appearance)."""
    classes: dict[str, int] = {}
    records = []
    for xml in sorted((root / "Annotations").glob("*.xml")):
        tree = ET.parse(xml)
        boxes, labels, difficult = [], [], []
        for obj in tree.iter("object"):
            name = obj.findtext("name", "").strip()
            bb = obj.find("bndbox")
            boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(classes.setdefault(name, len(classes) + 1))
            difficult.append(int(obj.findtext("difficult", "0") or 0))
        path = root / "JPEGImages" / f"{xml.stem}.jpg"
        size = tree.find("size")
        records.append(
            ImageRecord(
                xml.stem, str(path), int(size.findtext("width")), int(size.findtext("height")),
                np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), np.asarray(difficult, bool),
            )
        )
    return records


def timed(fn, n_images: int, repeats: int) -> tuple[float, float]:
    """Median images/s over repeats: (wall, process CPU)."""
    fn(0)  # warm-up
    wall, cpu = [], []
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(r + 1)
        wall.append(n_images / (time.perf_counter() - t0))
        cpu.append(n_images / max(time.process_time() - c0, 1e-9))
    return statistics.median(wall), statistics.median(cpu)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def loader_rate(dataset: DetectionDataset, workers: int, batch: int, epochs: int) -> tuple[float, float]:
    """DataLoader throughput: (images/s wall from the first batch on, images per worker-CPU-second).

    Worker CPU time is read from the workers' rusage once they have exited (they exit when the loader is done).
    """
    n_all = len(dataset)
    keys = [[(e, i) for i in range(j, min(j + batch, n_all))] for e in range(epochs) for j in range(0, n_all, batch)]
    loader = DataLoader(
        dataset, batch_sampler=keys, num_workers=workers, collate_fn=collate_detections, prefetch_factor=4 if workers else None
    )
    total = sum(len(k) for k in keys)
    c0 = _children_cpu()
    n, t0 = 0, None
    for images, _, _ in loader:
        if t0 is None:
            t0 = time.perf_counter()
            continue
        n += images.shape[0]
    wall = n / (time.perf_counter() - t0)
    del loader
    return wall, total / max(_children_cpu() - c0, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=0, help="use only the first N images (0: all)")
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--skip-reference", action="store_true")
    args = ap.parse_args()
    if not (args.data / "Annotations").is_dir():
        sys.exit(f"{args.data}: not a VOC-style folder (need Annotations/ and JPEGImages/)")
    torch.set_num_threads(1)
    records = voc_records(args.data)[: args.images or None]
    blobs = [Path(r.path).read_bytes() for r in records]
    images = [read_image(r.path) for r in records]
    targets = [(torch.from_numpy(r.boxes), torch.from_numpy(r.labels)) for r in records]
    fast, ref = SSDTrainAugment(args.size), ReferenceAugment(args.size)
    n = len(records)

    def run_on_decoded(aug):
        def fn(rep: int) -> None:
            for i, (img, (b, lab)) in enumerate(zip(images, targets)):
                aug(img, b, lab, sample_generator(0, rep, i))
        return fn

    def ref_with_decode(rep: int) -> None:
        for i, (blob, (b, lab)) in enumerate(zip(blobs, targets)):
            img = decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
            ref(img, b, lab, sample_generator(0, rep, i))

    def fast_with_decode(rep: int) -> None:
        for i, (r, blob, (b, lab)) in enumerate(zip(records, blobs, targets)):
            load_sample(r.path, b, lab, fast, sample_generator(0, rep, i), data=blob)

    def decode_only(rep: int) -> None:
        for blob in blobs:
            decode_jpeg(torch.frombuffer(bytearray(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)

    rows: list[tuple[str, float, float | None]] = []
    print(f"{n} images from {args.data}, {args.size}x{args.size} output, 1 thread, median of {args.repeats} passes")
    rows.append(("JPEG decoding only (decode_jpeg)", *timed(decode_only, n, args.repeats)))
    if not args.skip_reference:
        rows.append(("plain v2 composition, decoded images", *timed(run_on_decoded(ref), n, max(1, args.repeats // 2))))
        rows.append(("plain v2 composition + JPEG decoding", *timed(ref_with_decode, n, max(1, args.repeats // 2))))
    rows.append(("fast path, decoded images", *timed(run_on_decoded(fast), n, args.repeats)))
    rows.append(("fast path + JPEG decoding", *timed(fast_with_decode, n, args.repeats)))
    dataset = DetectionDataset(records, fast, seed=0)
    for w in args.workers:
        runs = [loader_rate(dataset, w, 16, 2) for _ in range(max(1, args.repeats // 2))]
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        rows.append((f"fast path + decoding, DataLoader, {w} worker{'s' if w > 1 else ''}: total", wall, None))
        rows.append(("  per worker (CPU: images per worker-CPU-second)", wall / w, cpu))

    table = Table(title=f"SSD training augmentation, {args.size}x{args.size}, images/s (higher is better)")
    table.add_column("pipeline", no_wrap=True)
    table.add_column("images/s (wall)", justify="right")
    table.add_column("images/s (CPU time)", justify="right")
    for name, wall, cpu in rows:
        table.add_row(name, f"{wall:.0f}", "" if cpu is None else f"{cpu:.0f}")
    Console().print(table)
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
