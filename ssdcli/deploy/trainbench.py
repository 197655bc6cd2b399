"""Training-step throughput: forward + target encoding + loss + backward + SGD step on random data."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ssdcli.deploy.engines import sync
from ssdcli.errors import SsdError, first_line
from ssdcli.models.base import ModelConfig
from ssdcli.models.registry import build_from_config


def random_targets(batch: int, num_classes: int, gen: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """1-4 random boxes per image (relative xyxy, 5%-60% of the side) with 1-based labels."""
    boxes, labels = [], []
    for _ in range(batch):
        k = int(torch.randint(1, 5, (1,), generator=gen))
        wh = torch.rand(k, 2, generator=gen) * 0.55 + 0.05
        xy = torch.rand(k, 2, generator=gen) * (1 - wh)
        boxes.append(torch.cat((xy, xy + wh), dim=1))
        labels.append(torch.randint(1, num_classes, (k,), generator=gen))
    return boxes, labels


@dataclass
class TrainRow:
    """One training-throughput measurement of ``ssd benchmark --train``."""

    batch: int
    status: str = "ok"
    reason: str = ""
    step_ms: float | None = None
    images_per_s: float | None = None


def train_throughput(
    config: ModelConfig, device: torch.device, batch: int, half: bool, warmup: int = 1, iters: int = 3
) -> TrainRow:
    """Median training-step time of ``config``'s architecture (random weights) -> :class:`TrainRow`."""
    model = build_from_config(config).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=half)
    gen = torch.Generator().manual_seed(0)
    size = config.image_size
    times = []
    try:
        for i in range(warmup + iters):
            images = torch.randn(batch, 3, size, size, generator=gen)
            gt_boxes, gt_labels = random_targets(batch, config.num_classes, gen)
            sync(device)
            t0 = time.perf_counter()
            x = images.to(device, non_blocking=True)
            targets = model.encode_targets([b.to(device) for b in gt_boxes], [lab.to(device) for lab in gt_labels])
            with torch.autocast(device.type, dtype=torch.float16, enabled=half):
                loss = model.compute_loss(model(x), targets)["total"]
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    except (SsdError, RuntimeError, ValueError, MemoryError) as e:  # out of memory; BatchNorm refusing a batch of 1
        text = first_line(e)
        if "Expected more than 1 value per channel" in text:
            text = "BatchNorm layers cannot train on a batch of 1 image"
        return TrainRow(batch, "skipped", f"failed: {text}")
    step = float(np.median(times))
    return TrainRow(batch, "ok", "", step * 1000, batch / step)
