"""Built-in sample dataset: drawn shapes on textured backgrounds, written in the PASCAL VOC layout.

``write_sample_dataset(out)`` writes ``out/Annotations/*.xml``, ``out/JPEGImages/*.jpg``,
``out/ImageSets/Main/{trainval,test}.txt`` and ``out/classes.txt`` (one name per line), ready for
``prepare_voc(out, ..., classes=list(SAMPLE_CLASSES))``. Each image holds 1-4 objects of the classes in
:data:`SAMPLE_CLASSES` with random size (about 12%-60% of the shorter image side), aspect, rotation and colour,
overlapping a little, over gradients, blotches, noise and thin clutter lines (which are not objects).

Boxes are exact: the tight box of the pixels each shape covers (amodal: a shape partly hidden by a later one
keeps its full box), written in the VOC pixel convention (1-based inclusive, see :mod:`ssdcli.boxes`).
Image ``i`` of a split depends only on ``(seed, split, i)``, so output is identical for a seed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ssdcli.errors import SsdError
from ssdcli.reporting import Reporter, as_reporter

SAMPLE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star")
# (split file, id prefix, seed stream); with a val split the training images are listed in train.txt instead
_SPLITS = (("trainval", "train", 0), ("test", "test", 1), ("val", "val", 2))
_MIN_REL, _MAX_REL = 0.12, 0.6  # object size relative to the shorter image side
_MAX_OVERLAP = 0.3  # intersection / area of the smaller box, between any two objects


def write_sample_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 300,
    num_test: int = 100,
    image_size: int | tuple[int, int] = (192, 320),
    seed: int = 0,
    reporter: Reporter | None = None,
    num_val: int = 0,
) -> Path:
    """Write the sample dataset to ``out_dir`` (created; existing files of the same names are replaced).

    ``image_size``: a side length, or ``(min, max)`` for random width and height in that range.
    ``reporter``: a :class:`ssdcli.reporting.Reporter` (task ``"draw samples"``). ``num_val`` > 0 adds a ``val`` split (then the
    training images are listed in ``train.txt``; the train and test images do not change). Returns ``Path(out_dir)``.
    """
    lo, hi = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if lo < 32 or hi < lo:
        raise SsdError(f"image_size: need 32 <= min <= max, got {image_size}")
    if num_train < 0 or num_test < 0 or num_val < 0 or num_train + num_test == 0:
        raise SsdError(f"need a positive number of images (train {num_train}, test {num_test})")
    out = Path(out_dir)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    total = num_train + num_test + num_val
    reporter = as_reporter(reporter)
    reporter.start("draw samples", total, unit="img")
    for (split_file, prefix, stream), n in zip(_SPLITS, (num_train, num_test, num_val)):
        if num_val and split_file == "trainval":
            split_file = "train"
        if split_file == "val" and not n:
            continue
        ids = []
        for i in range(n):
            image_id = f"{prefix}_{i:05d}"
            rng = np.random.default_rng([seed, stream, i])
            image, objects = draw_sample(rng, lo, hi)
            image.save(out / "JPEGImages" / f"{image_id}.jpg", quality=90)
            (out / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, image.size, objects))
            ids.append(image_id)
            reporter.advance("draw samples")
        (out / "ImageSets" / "Main" / f"{split_file}.txt").write_text("".join(f"{i}\n" for i in ids))
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in SAMPLE_CLASSES))
    reporter.end("draw samples")
    return out


def draw_sample(
    rng: np.random.Generator, lo: int, hi: int, noise: bool = True
) -> tuple[Image.Image, list[tuple[str, tuple[int, ...]]]]:
    """One RGB image (sides in ``[lo, hi]``) with ``[(class name, (xmin, ymin, xmax, ymax) VOC pixels), ...]``."""
    w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    image = _background(rng, w, h)
    draw = ImageDraw.Draw(image)
    _clutter(rng, draw, w, h, int(rng.integers(3, 10)))
    side = min(w, h)
    objects: list[tuple[str, tuple[int, ...]]] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(15):
            s = side * rng.uniform(_MIN_REL, _MAX_REL)
            aspect = math.exp(rng.uniform(-0.3, 0.3))
            bw, bh = max(8, int(s * math.sqrt(aspect))), max(8, int(s / math.sqrt(aspect)))
            x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            if all(_overlap((x0, y0, x0 + bw, y0 + bh), b) <= _MAX_OVERLAP for b in _boxes_xyxy(objects)):
                break
        else:
            continue
        label = int(rng.integers(len(SAMPLE_CLASSES)))
        mask = Image.new("L", (bw, bh), 0)
        _draw_shape(ImageDraw.Draw(mask), SAMPLE_CLASSES[label], bw, bh, rng)
        bbox = mask.getbbox()
        if bbox is None:
            continue
        colour = _contrasting_colour(rng, np.asarray(image.crop((x0, y0, x0 + bw, y0 + bh))))
        if rng.random() < 0.4:  # a darker outline on some objects: paint it, then the eroded inside
            image.paste(tuple(v // 3 for v in colour), (x0, y0), mask)
            mask_inside = mask.filter(ImageFilter.MinFilter(int(rng.choice([3, 5]))))
            image.paste(colour, (x0, y0), mask_inside)
        else:
            image.paste(colour, (x0, y0), mask)
        objects.append((SAMPLE_CLASSES[label], (x0 + bbox[0] + 1, y0 + bbox[1] + 1, x0 + bbox[2], y0 + bbox[3])))
    _clutter(rng, draw, w, h, int(rng.integers(0, 3)))  # a few thin lines over the objects too
    if not noise:
        return image, objects
    arr = np.asarray(image, dtype=np.float32)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(rng.uniform(3.0, 10.0))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), objects


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A linear gradient between two random colours plus soft colour blotches."""
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    xs, ys = np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None]
    t = xs * math.cos(angle) + ys * math.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    blotches = rng.uniform(-50, 50, size=(int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3)).astype(np.float32)
    blot = np.stack([np.asarray(Image.fromarray(blotches[..., c]).resize((w, h), Image.BICUBIC)) for c in range(3)], -1)
    arr = c0 + t[..., None] * (c1 - c0) + blot
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, w: int, h: int, n: int) -> None:
    for _ in range(n):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        length, angle = rng.uniform(0.1, 0.8) * max(w, h), rng.uniform(0, 2 * math.pi)
        end = (x0 + length * math.cos(angle), y0 + length * math.sin(angle))
        if rng.random() < 0.75:
            draw.line([(x0, y0), end], fill=colour, width=int(rng.integers(1, 3)))
        else:  # a small dot or an open arc
            r = rng.uniform(1, 3) if rng.random() < 0.5 else rng.uniform(6, 20)
            start = rng.uniform(0, 360)
            draw.arc([x0 - r, y0 - r, x0 + r, y0 + r], start, start + rng.uniform(60, 200), fill=colour, width=1)


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, bw: int, bh: int, rng: np.random.Generator) -> None:
    """Draw ``name`` filled (255) so that it spans the whole ``bw x bh`` mask."""
    if name == "circle":
        draw.ellipse([0, 0, bw - 1, bh - 1], fill=255)
        return
    if name == "square":
        angles = np.deg2rad(np.array([45, 135, 225, 315]) + rng.uniform(-15, 15))
    elif name == "triangle":
        angles = np.deg2rad(np.array([90, 210, 330]) + rng.uniform(0, 360))
    else:  # star: 5 outer points, inner radius 0.38-0.5
        angles = np.deg2rad(np.arange(10) * 36.0 + rng.uniform(0, 360))
    radii = np.ones_like(angles)
    if name == "star":
        radii[1::2] = rng.uniform(0.38, 0.5)
    px, py = radii * np.cos(angles), radii * np.sin(angles)
    px = (px - px.min()) / (px.max() - px.min()) * (bw - 1)
    py = (py - py.min()) / (py.max() - py.min()) * (bh - 1)
    draw.polygon(list(zip(px.tolist(), py.tolist())), fill=255)


def _contrasting_colour(rng: np.random.Generator, region: np.ndarray) -> tuple[int, int, int]:
    """A random colour far (in RGB) from the mean of the background ``region`` it is painted on."""
    mean = region.reshape(-1, 3).mean(0)
    best, best_d = (0, 0, 0), -1.0
    for _ in range(12):
        c = rng.integers(0, 256, 3)
        d = float(np.linalg.norm(c - mean))
        if d > best_d:
            best, best_d = tuple(int(v) for v in c), d
        if d > 150:
            break
    return best  # type: ignore[return-value]


def _boxes_xyxy(objects: list[tuple[str, tuple[int, ...]]]) -> list[tuple[int, ...]]:
    return [(b[0] - 1, b[1] - 1, b[2], b[3]) for _, b in objects]


def _overlap(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _xml(image_id: str, size: tuple[int, int], objects: list[tuple[str, tuple[int, ...]]]) -> str:
    objs = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, b in objects
    )
    return (
        f"<annotation>\n\t<folder>ssdcli-sample</folder>\n\t<filename>{image_id}.jpg</filename>\n"
        f"\t<source>\n\t\t<database>ssdcli sample shapes</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        f"\t<segmented>0</segmented>\n{objs}</annotation>\n"
    )
