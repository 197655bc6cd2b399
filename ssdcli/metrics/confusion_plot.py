"""The confusion matrix as a picture (matplotlib, Agg canvas, no pyplot state), written next to the PR curves."""

from __future__ import annotations

import io
import os

import numpy as np

from ssdcli.io_utils import atomic_write
from ssdcli.metrics.confusion import ConfusionMatrix

__all__ = ["plot_confusion_matrix"]

_MAX_ANNOTATED = 30  # more classes than this: colours only, no numbers in the cells


def row_fractions(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (0 for an empty row): for a class row, the share of its objects in each cell."""
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def plot_confusion_matrix(path: str | os.PathLike, cm: ConfusionMatrix, title: str = "") -> None:
    """Draw ``cm`` (colour: share of the row; numbers: counts) and write ``path`` (PNG) atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = cm.labels
    k = len(labels)
    side = min(4.0 + 0.45 * k, 22.0)
    fig = Figure(figsize=(side + 1.5, side), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    frac = row_fractions(cm.matrix)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the row (true class)")
    fontsize = 9 if k <= 12 else 7 if k <= 22 else 5
    ax.set_xticks(range(k), labels, rotation=90 if k > 6 else 0, fontsize=fontsize)
    ax.set_yticks(range(k), labels, fontsize=fontsize)
    ax.set_xlabel("predicted class (background: object missed)")
    ax.set_ylabel("true class (background: false positive)")
    ax.axhline(k - 1.5, color="0.4", linewidth=0.8)
    ax.axvline(k - 1.5, color="0.4", linewidth=0.8)
    if k <= _MAX_ANNOTATED:
        rows, cols = np.nonzero(cm.matrix)
        for r, c in zip(rows.tolist(), cols.tolist()):
            ax.text(c, r, str(int(cm.matrix[r, c])), ha="center", va="center", fontsize=fontsize,
                    color="white" if frac[r, c] > 0.55 else "black")  # fmt: skip
    head = title or "Confusion matrix"
    ax.set_title(
        f"{head}\nIoU >= {cm.iou_threshold:g}, score >= {cm.score_threshold:g}: {cm.correct} correct, "
        f"{cm.confused} wrong class, {cm.missed} missed, {cm.false_positives} false positives",
        fontsize=9,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
