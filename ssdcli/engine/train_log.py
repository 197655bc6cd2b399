"""Training metrics files: ``metrics.jsonl`` (one row per log interval / validation), the same rows as
``metrics.csv``, TensorBoard event files when ``tensorboard`` is installed, and the curves drawn from them."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
from pathlib import Path
from typing import Any

import torch

from ssdcli.engine.train_options import metric_label
from ssdcli.io_utils import atomic_write, atomic_write_text
from ssdcli.reporting import NullReporter


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class MetricsLog:
    """Appends JSON rows to ``metrics.jsonl`` (flushed per row: a crash keeps everything logged so far)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop rows logged after the checkpoint's iteration (they will be produced again)."""
        kept = [r for r in self.rows() if r.get("iter", 0) <= iteration]

        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


class MetricsCsv:
    """``metrics.csv``: the rows of ``metrics.jsonl``, one column per key (in order of first appearance, empty where
    a row lacks it). Rows are appended; the file is rewritten when a new key appears."""

    def __init__(self, path: Path, rows: list[dict]) -> None:
        self.path = path
        self.rows: list[dict] = []
        self.columns: list[str] = []
        self.rewrite(rows)

    def write(self, row: dict) -> None:
        self.rows.append(row)
        if any(k not in self.columns for k in row):
            self.rewrite(self.rows)
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns, restval="").writerow(row)

    def rewrite(self, rows: list[dict]) -> None:
        self.rows = list(rows)
        self.columns = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, self.columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue() if rows else "")


def tensorboard_writer(log_dir: Path, purge_step: int | None = None) -> Any | None:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``, or None when ``tensorboard`` is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency (pip install tensorboard)
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class MetricsFiles(NullReporter):
    """Where a run's metric rows go: ``metrics.jsonl``, ``metrics.csv``, ``tensorboard/`` (when ``tensorboard`` is
    installed), and ``loss.png`` / ``map.png`` redrawn after every validation. A
    :class:`ssdcli.reporting.Reporter` that only listens to ``metrics``. Files are created by the first row."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl")
        self.csv: MetricsCsv | None = None
        self.tensorboard: Any | None = None
        self._purge_step: int | None = None
        self._tensorboard_tried = False

    def rows(self) -> list[dict]:
        return self.log.rows()

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop rows logged after the checkpoint's iteration from every file (they will come again)."""
        self.log.truncate_after(iteration)
        self.csv = MetricsCsv(self.run_dir / "metrics.csv", self.log.rows())
        self._purge_step = iteration

    def metrics(self, row: dict[str, Any]) -> None:
        self.log.write(row)
        if self.csv is None:
            self.csv = MetricsCsv(self.run_dir / "metrics.csv", self.log.rows())
        else:
            self.csv.write(row)
        kind = str(row.get("type", "train"))
        self._to_tensorboard(kind, row)
        if kind == "val":
            plot_curves(self.log.rows(), self.run_dir)

    def _to_tensorboard(self, kind: str, row: dict[str, Any]) -> None:
        if not self._tensorboard_tried:
            self._tensorboard_tried = True
            self.tensorboard = tensorboard_writer(self.run_dir / "tensorboard", purge_step=self._purge_step)
        if self.tensorboard is None:
            return
        step = int(row.get("iter", 0))
        for k, v in row.items():
            if k not in ("type", "iter") and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.tensorboard.add_scalar(f"{kind}/{k}", v, global_step=step)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.tensorboard, self._tensorboard_tried = None, False


def plot_curves(rows: list[dict], out_dir: Path) -> list[Path]:
    """``loss.png`` (every loss term vs iteration) and ``map.png`` (validation mAP); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    train = [r for r in rows if r.get("type") == "train"]
    val = [r for r in rows if r.get("type") == "val"]
    if train:
        keys = [k[5:] for k in train[0] if k.startswith("loss_")]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        for k in keys:
            ax.plot([r["iter"] for r in train], [r[f"loss_{k}"] for r in train], label=k)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / "loss.png"
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
        plt.close(fig)
        written.append(path)
    if val:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
        ax.plot([r["iter"] for r in val], [r["map"] for r in val], marker="o")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"val {metric_label(val[0].get('metric', 'voc07'))}")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / "map.png"
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
        plt.close(fig)
        written.append(path)
    return written
