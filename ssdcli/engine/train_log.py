"""Training metrics log (JSONL, one row per log interval / validation) and the curves drawn from it."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import torch


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
        from ssdcli.io_utils import atomic_write_text

        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def plot_curves(rows: list[dict], out_dir: Path) -> list[Path]:
    """``loss.png`` (every loss term vs iteration) and ``map.png`` (validation mAP); written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssdcli.io_utils import atomic_write

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
        ax.set_ylabel(f"val mAP ({val[0].get('metric', '')})")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / "map.png"
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
        plt.close(fig)
        written.append(path)
    return written
