"""Precision-recall plots: one PNG with a curve per class (matplotlib, Agg canvas, no pyplot state)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from ssdcli.io_utils import atomic_write

__all__ = ["PRCurve", "plot_pr_curves"]

_COLOR_ORDER = list(range(0, 20, 2)) + list(range(1, 20, 2))  # tab20: the 10 dark shades first, then the light ones
_MAX_POINTS = 2000  # per curve; longer curves are subsampled (shape unchanged at plot resolution)


@dataclass
class PRCurve:
    name: str
    recall: np.ndarray  # [K] nondecreasing
    precision: np.ndarray  # [K]
    ap: float | None  # shown in the legend; None = n/a


def _subsample(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first points (the steep start) and points spread evenly in recall (x nondecreasing)."""
    if len(x) <= _MAX_POINTS or not np.isfinite(x).all():
        return x, y
    head = np.arange(_MAX_POINTS // 10)
    spread = np.searchsorted(x, np.linspace(x[0], x[-1], _MAX_POINTS - len(head)), side="left")
    idx = np.unique(np.concatenate([head, np.minimum(spread, len(x) - 1), [len(x) - 1]]))
    return x[idx], y[idx]


def plot_pr_curves(path: str | os.PathLike, curves: list[PRCurve], title: str) -> None:
    """Draw all ``curves`` on one axes and write ``path`` (PNG) atomically. Curves without points are
    listed in the legend only."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab20"]
    for i, c in enumerate(curves):
        label = f"{c.name} (AP {'n/a' if c.ap is None else f'{c.ap:.4f}'})"  # AP as everywhere: 0-1, 4 decimals
        r, p = _subsample(np.asarray(c.recall, float), np.asarray(c.precision, float))
        ok = np.isfinite(r) & np.isfinite(p)
        color = cmap(_COLOR_ORDER[i % 20])
        if ok.any():
            ax.plot(r[ok], p[ok], color=color, linewidth=1.2, label=label,
                    linestyle="-" if i < 20 else "--")
        else:
            ax.plot([], [], color=color, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, title="class (AP, 0-1)", title_fontsize=7,
              ncol=1 + len(curves) // 30)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, lambda f: f.write(buf.getvalue()))
