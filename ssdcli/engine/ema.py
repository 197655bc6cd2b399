"""Exponential moving average of a model's weights (``ssd train --ema``), on ``torch.optim.swa_utils``.

``AveragedModel`` keeps the copy and the update count; the averaging function here adds the usual warm-up of the
decay, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so short runs (a few hundred CPU steps) are not
dominated by the random initialisation. BatchNorm statistics are averaged too (``use_buffers=True``); integer
buffers (``num_batches_tracked``) follow the model. The state (weights + count) resumes bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def _ema_fn(decay: float):
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (same device); call ``.update_parameters(model)`` after each optimizer step."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
    return AveragedModel(model, multi_avg_fn=_ema_fn(decay), use_buffers=True)
