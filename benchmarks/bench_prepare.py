"""Throughput of ``prepare_voc`` on a synthetic 20k-image VOC folder (header reads only, no full decode).

Images are hard links to a few small JPEGs under 20k names; annotations are real VOC XML with 1-3 objects.
Prints the median wall time of ``--repeats`` runs for each worker count, and the CPU time used (this process
plus its worker processes), which says what the run costs when the machine is shared.

    python benchmarks/bench_prepare.py [--images 20000] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ssdcli.data.prepare import prepare_voc
from ssdcli.data.voc import VOC_CLASSES

XML = """<annotation>
\t<folder>VOC2007</folder>
\t<filename>{id}.jpg</filename>
\t<source><database>synthetic</database></source>
\t<owner><name>bench</name></owner>
\t<size><width>500</width><height>375</height><depth>3</depth></size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
OBJ = """\t<object>
\t\t<name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{difficult}</difficult>
\t\t<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>
\t</object>
"""


def build(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(4):
        src = folder / f"source{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)).save(src, quality=85)
        sources.append(src)
    ids = [f"{i:06d}" for i in range(n)]
    for i, image_id in enumerate(ids):
        objs = []
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = int(rng.integers(1, 400)), int(rng.integers(1, 300))
            b = (x0, y0, x0 + int(rng.integers(10, 100)), y0 + int(rng.integers(10, 75)))
            objs.append(OBJ.format(name=VOC_CLASSES[int(rng.integers(20))], difficult=int(rng.random() < 0.1), b=b))
        (folder / "Annotations" / f"{image_id}.xml").write_text(XML.format(id=image_id, objects="".join(objs)))
        os.link(sources[i % len(sources)], folder / "JPEGImages" / f"{image_id}.jpg")
    cut = int(n * 0.8)
    (folder / "ImageSets/Main/trainval.txt").write_text("\n".join(ids[:cut]) + "\n")
    (folder / "ImageSets/Main/test.txt").write_text("\n".join(ids[cut:]) + "\n")


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_prepares(prepare, tmp: Path, workers: list[int], repeats: int, images: int, objects: int | None = None) -> None:
    """``prepare(out, workers)`` ``repeats`` times per worker count: median wall and CPU time (workers included),
    checking that every image (and, given, every object) came through."""
    for w in workers:
        times, cpu = [], []
        for r in range(repeats):
            c, t = _cpu_seconds(), time.perf_counter()
            report = prepare(tmp / f"out{w}_{r}", w)
            times.append(time.perf_counter() - t)
            cpu.append(_cpu_seconds() - c)
            assert sum(s.images for s in report.splits.values()) == images, report.skipped[:3]
            assert objects is None or sum(s.objects for s in report.splits.values()) == objects
        med = statistics.median(times)
        print(
            f"workers={w}: median {med:.2f} s over {repeats} runs "
            f"({', '.join(f'{x:.2f}' for x in times)}) -> {images / med:,.0f} images/s; "
            f"CPU {statistics.median(cpu):.2f} s; load average {os.getloadavg()[0]:.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        folder = Path(tmp) / "voc"
        t = time.perf_counter()
        build(folder, args.images)
        print(f"built {args.images} synthetic VOC items in {time.perf_counter() - t:.1f} s")
        time_prepares(lambda out, w: prepare_voc(folder, out, workers=w), Path(tmp), args.workers, args.repeats,
                      args.images)


if __name__ == "__main__":
    main()
