"""Label statistics of a prepared dataset, and the picture ``labels.png`` that every ``prepare-*`` writes.

Six panels, the kind of ``labels.jpg`` YOLO trainers write, meant to catch dataset mistakes at a glance: objects
per class and split (hatched: difficult / crowd), objects per image, box width x height relative to the image and
in pixels (2-D histograms, log axes, the COCO small / medium / large area limits drawn in), aspect ratios (log
bins) and where box centres fall in the image. Box sizes follow the project's pixel convention
(:mod:`ssdcli.boxes`): ``w = xmax - xmin + 1`` pixels, relative ``w / W``.

Everything is numpy over all boxes at once; drawing uses matplotlib's Agg canvas (no pyplot state) and the file
is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssdcli.data.records import ImageRecord
from ssdcli.io_utils import atomic_write

__all__ = ["LABELS_PICTURE", "LabelStats", "label_stats", "plot_label_stats", "write_label_stats"]

LABELS_PICTURE = "labels.png"  # written next to manifest.json
_COCO_AREAS = (32**2, 96**2)  # COCO's small / medium / large limits, in square pixels


@dataclass
class LabelStats:
    """Every box of a prepared dataset as flat arrays (one entry per box, splits in the order given)."""

    classes: list[str]
    splits: list[str]
    split_index: np.ndarray  # int64 [B]
    labels: np.ndarray  # int64 [B], 1-based
    difficult: np.ndarray  # bool [B]
    width_px: np.ndarray  # float64 [B], xmax - xmin + 1
    height_px: np.ndarray  # float64 [B]
    width_rel: np.ndarray  # float64 [B], width_px / image width
    height_rel: np.ndarray  # float64 [B]
    center_rel: np.ndarray  # float64 [B, 2], box centre (x, y) in [0, 1], y downwards
    objects_per_image: dict[str, np.ndarray]  # split -> int64 [images]

    @property
    def aspect(self) -> np.ndarray:
        """Width / height in pixels (1: square, > 1: wide)."""
        return self.width_px / np.maximum(self.height_px, 1e-9)

    def per_class(self) -> np.ndarray:
        """int64 ``[splits, classes, 2]``: objects per split and class, ``[..., 1]`` of them difficult."""
        s, c = len(self.splits), len(self.classes)
        flat = self.split_index * c + (self.labels - 1)
        total = np.bincount(flat, minlength=s * c).reshape(s, c)
        diff = np.bincount(flat[self.difficult], minlength=s * c).reshape(s, c)
        return np.stack([total, diff], axis=-1)


def label_stats(split_records: Mapping[str, Sequence[ImageRecord]], classes: Sequence[str]) -> LabelStats:
    """Gather the boxes of every split (``{split: records}``) into :class:`LabelStats`."""
    splits = list(split_records)
    recs = [r for s in splits for r in split_records[s]]
    counts = np.array([len(r.labels) for r in recs], dtype=np.int64)
    split_of_image = np.repeat(np.arange(len(splits)), [len(split_records[s]) for s in splits])
    boxes = np.concatenate([np.asarray(r.boxes, np.float64).reshape(-1, 4) for r in recs] + [np.zeros((0, 4))])
    size = np.repeat(np.array([[r.width, r.height] for r in recs], np.float64).reshape(-1, 2), counts, axis=0)
    w, h = boxes[:, 2] - boxes[:, 0] + 1.0, boxes[:, 3] - boxes[:, 1] + 1.0
    centre = np.stack([(boxes[:, 0] - 1.0 + boxes[:, 2]) / 2, (boxes[:, 1] - 1.0 + boxes[:, 3]) / 2], axis=1)
    per_image = {s: counts[split_of_image == i] for i, s in enumerate(splits)}
    return LabelStats(
        classes=list(classes), splits=splits, split_index=np.repeat(split_of_image, counts).astype(np.int64),
        labels=np.concatenate([np.asarray(r.labels, np.int64) for r in recs] + [np.zeros(0, np.int64)]),
        difficult=np.concatenate([np.asarray(r.difficult, bool) for r in recs] + [np.zeros(0, bool)]),
        width_px=w, height_px=h, width_rel=w / size[:, 0], height_rel=h / size[:, 1], center_rel=centre / size,
        objects_per_image=per_image,
    )  # fmt: skip


def write_label_stats(folder: str | os.PathLike, split_records: Mapping[str, Sequence[ImageRecord]],
                      classes: Sequence[str], title: str = "") -> Path:  # fmt: skip
    """Write ``folder/labels.png`` (atomically) and return its path."""
    path = Path(folder) / LABELS_PICTURE
    plot_label_stats(path, label_stats(split_records, classes), title)
    return path


_SPLIT_COLORS = ("#4363d8", "#f58231", "#3cb44b", "#911eb4", "#e6194b", "#469990")


def plot_label_stats(path: str | os.PathLike, stats: LabelStats, title: str = "") -> None:
    """Draw the six panels of :class:`LabelStats` and write ``path`` (PNG) atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 9.5), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    _per_class(axes[0, 0], stats)
    _per_image(axes[0, 1], stats)
    _centres(axes[0, 2], stats)
    _sizes(fig, axes[1, 0], stats.width_rel, stats.height_rel, "box size relative to the image", "width / image width",
           "height / image height")
    _sizes(fig, axes[1, 1], stats.width_px, stats.height_px, "box size in pixels (lines: COCO small/medium/large)",
           "width (px)", "height (px)", areas=True)
    _aspects(axes[1, 2], stats)
    n_img = sum(len(v) for v in stats.objects_per_image.values())
    head = f"{title}: " if title else ""
    n_cls = len(stats.classes)
    fig.suptitle(f"{head}{n_img} images, {len(stats.labels)} objects, {n_cls} class{'es' if n_cls != 1 else ''} "
                 f"({', '.join(f'{s} {len(v)}' for s, v in stats.objects_per_image.items())} images)", fontsize=12)
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.07, top=0.9, wspace=0.42, hspace=0.38)  # (tight_layout: +1 s)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _per_class(ax, stats: LabelStats) -> None:
    counts = stats.per_class()  # [S, C, 2]
    n_cls, n_split = len(stats.classes), len(stats.splits)
    shown = np.argsort(-counts[:, :, 0].sum(axis=0), kind="stable")[:40]  # the 40 most frequent classes
    y = np.arange(len(shown))
    height = 0.8 / max(n_split, 1)
    for i, split in enumerate(stats.splits):
        color = _SPLIT_COLORS[i % len(_SPLIT_COLORS)]
        pos = y - 0.4 + height * (i + 0.5)
        ax.barh(pos, counts[i, shown, 0], height=height, color=color, label=split)
        ax.barh(pos, counts[i, shown, 1], height=height, color="none", edgecolor="black", hatch="///",
                linewidth=0, label="difficult / crowd" if i == 0 and counts[:, :, 1].any() else None)
    ax.set_yticks(y, [stats.classes[k] for k in shown], fontsize=8 if len(shown) <= 20 else 6)
    ax.invert_yaxis()
    ax.set_xlabel("objects")
    more = f" (40 most frequent of {n_cls})" if n_cls > 40 else ""
    ax.set_title(f"objects per class{more}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, axis="x", alpha=0.3)


def _per_image(ax, stats: LabelStats) -> None:
    from matplotlib.ticker import MaxNLocator

    top = max([int(v.max()) for v in stats.objects_per_image.values() if len(v)] + [1])
    bins = np.arange(top + 2) - 0.5 if top <= 60 else np.linspace(-0.5, top + 0.5, 61)
    values = [stats.objects_per_image[s] for s in stats.splits]
    colors = [_SPLIT_COLORS[i % len(_SPLIT_COLORS)] for i in range(len(values))]
    ax.hist(values, bins=bins, stacked=True, color=colors, label=stats.splits)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("objects in the image")
    ax.set_ylabel("images")
    ax.set_title("objects per image (stacked by split; 0: images without objects)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def _centres(ax, stats: LabelStats) -> None:
    xy = np.clip(stats.center_rel, 0.0, 1.0)
    bins = int(np.clip(np.sqrt(len(xy)) / 1.5, 8, 50))  # coarse for few boxes, so the heat-map is not speckle
    ax.hist2d(xy[:, 0], xy[:, 1], bins=bins, range=[[0, 1], [0, 1]], cmap="viridis")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # image coordinates: y downwards
    ax.set_aspect("equal")
    ax.set_xlabel("centre x / image width")
    ax.set_ylabel("centre y / image height")
    ax.set_title("box centres (image frame, top at the top)", fontsize=10)


def _sizes(fig, ax, w: np.ndarray, h: np.ndarray, title: str, xlabel: str, ylabel: str, areas: bool = False) -> None:
    ok = (w > 0) & (h > 0)
    w, h = w[ok], h[ok]
    if len(w):
        lo = min(w.min(), h.min()) / 1.5
        hi = max(w.max(), h.max()) * 1.5
        hb = ax.hexbin(w, h, xscale="log", yscale="log", gridsize=40, bins="log", mincnt=1, cmap="viridis",
                       extent=(np.log10(lo), np.log10(hi), np.log10(lo), np.log10(hi)))
        _plain_ticks(fig.colorbar(hb, ax=ax, label="boxes (log scale)").ax.yaxis)
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        if areas:
            side = np.geomspace(lo, hi, 200)
            for area, name in zip(_COCO_AREAS, ("32²", "96²")):
                ax.plot(side, area / side, color="white", linewidth=1.0, linestyle="--")
                ax.plot(side, area / side, color="black", linewidth=0.5, linestyle="--")
                ax.annotate(f"area {name}", (np.sqrt(area), np.sqrt(area)), fontsize=7, color="black",
                            xytext=(3, 3), textcoords="offset points",
                            bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1})
            small = float(np.mean(w * h < _COCO_AREAS[0]))
            large = float(np.mean(w * h >= _COCO_AREAS[1]))
            title += f"\nsmall {small:.0%}, medium {1 - small - large:.0%}, large {large:.0%}"
    else:
        ax.text(0.5, 0.5, "no boxes", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)


def _plain_ticks(axis) -> None:
    """``20``, ``100``, ``0.3`` instead of ``2x10^1``: log axes people read at a glance."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))


def _aspects(ax, stats: LabelStats) -> None:
    from matplotlib.ticker import NullFormatter

    a = stats.aspect[(stats.width_px > 0) & (stats.height_px > 0)]
    if len(a):
        lo, hi = min(a.min(), 0.25), max(a.max(), 4.0)
        ax.hist(a, bins=np.geomspace(lo, hi, 50), color=_SPLIT_COLORS[0])
        ax.set_xscale("log")
        ticks = [t for t in (0.1, 0.25, 0.5, 1, 2, 4, 10) if lo <= t <= hi]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
        q = np.quantile(a, [0.05, 0.5, 0.95])
        ax.set_title(f"aspect ratio width / height (5%, 50%, 95%: {q[0]:.2f}, {q[1]:.2f}, {q[2]:.2f})", fontsize=10)
    else:
        ax.set_title("aspect ratio width / height", fontsize=10)
    ax.set_xlabel("width / height (log; 1 = square, > 1 = wide)")
    ax.set_ylabel("boxes")
    ax.grid(True, axis="y", alpha=0.3)
